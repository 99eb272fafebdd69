import atexit
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED_CIFAR = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpeg")

# One persistent XLA compilation cache for the whole test run: the tests compile the same small programs
# many times over (each builds its own jitted step for the same tiny networks, and the mains' subprocesses
# compile what in-process tests already did). Set before anything imports jax; the xdist workers and every
# subprocess inherit it; a fresh folder per run (removed at exit), so a run never reads another's cache.
# Every program is cached, however fast it compiled: the small ones repeat too (measured on a 2-core x86 CPU,
# test_lesion.py + test_paths.py: 144 s against 151 s when only programs compiling in over 0.2 s were kept).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="resnet_ensembles_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)

# Decoded data: the full CIFAR-10 copy in the user's own cache (decoded once per machine, as the mains do); the
# small folders the tests write for themselves in a cache of this run's own, removed at exit, so that a test run
# leaves nothing else behind in ~/.cache. Subprocesses inherit the variable.
if "RESNET_ENSEMBLES_USER_CACHE" not in os.environ:  # set once: the xdist workers inherit both folders
  from resnet_ensembles.data.folder import cache_dir_or_default  # numpy and os only: jax is not imported yet
  os.environ["RESNET_ENSEMBLES_USER_CACHE"] = cache_dir_or_default(None)
  os.environ["RESNET_ENSEMBLES_CACHE"] = tempfile.mkdtemp(prefix="resnet_ensembles_data_cache_")
  atexit.register(shutil.rmtree, os.environ["RESNET_ENSEMBLES_CACHE"], ignore_errors=True)
USER_DATA_CACHE = os.environ["RESNET_ENSEMBLES_USER_CACHE"]

# The tests' programs are tiny and compiled once each, so XLA's backend optimisations cost more than they save:
# without them (measured on a 2-core x86 CPU, one worker, no background jobs) test_lesion.py +
# test_paths.py took 126 s instead of 176 s and test_imagenet.py + test_reproduce.py 386 s instead of 414 s
# (a longer real training, 190 s at full optimisation, took 198 s without). What the tests assert is unchanged:
# every equality they check is between programs compiled the same way. The fake-device subprocesses
# (`fake_devices_env`) add their device count to these flags (test_multihost.py: 73 s -> 57 s); a user's own
# optimisation level is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


@pytest.fixture(scope="session")
def fake_devices_env():
  """The environment of a subprocess that sees n fake CPU devices, keeping this test run's XLA flags."""
  flags = os.environ.get("XLA_FLAGS", "")
  return lambda n: dict(os.environ, JAX_PLATFORMS="cpu",
                        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={n}".strip())


@pytest.fixture(scope="session")
def cifar_root() -> str:
  root = os.environ.get("CIFAR10_DIR") or SHARED_CIFAR
  if not os.path.isdir(root):
    pytest.skip(f"CIFAR-10 folder copy not found at {root} (set CIFAR10_DIR)")
  return root


@pytest.fixture(scope="session")
def cifar(cifar_root):
  from resnet_ensembles.data import cifar10 as data
  return data.load_cifar10("folder", cifar_root, cache_dir=USER_DATA_CACHE)


@pytest.fixture(scope="session")
def small_cifar_root(cifar, tmp_path_factory) -> str:
  """256 training and 100 test images drawn from the CIFAR-10 copy as the `tiny` config draws them (the `tiny`
  study trains on 64 of them), as a CIFAR-10 folder of PNGs (lossless: they decode to the same arrays). A tiny
  study reads it in every process it starts without listing and loading 60,000 files each time."""
  from PIL import Image
  from resnet_ensembles.data import cifar10 as data
  from resnet_ensembles.data.folder import CIFAR10_CLASSES
  root = tmp_path_factory.mktemp("cifar10_small")
  for split, (size, seed) in {"train": (256, 0), "test": (100, 1)}.items():
    images, labels = data.subset(cifar[split], size, seed)
    for i, (image, label) in enumerate(zip(images, labels)):
      folder = root / split / CIFAR10_CLASSES[label]
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(folder / f"{i:05d}.png")
  return str(root)


# Seconds per test file, measured on a 2-core x86 CPU (2 xdist workers, shared compilation cache).
# The longest files go first (`--dist loadfile --no-loadscope-reorder` in run.sh keeps this order), so that
# the two workers finish together instead of one running the longest file alone at the end; a file not
# listed runs after these. Only the order of the files changes, never what they test.
FILE_SECONDS = {"test_reproduce.py": 240, "test_imagenet.py": 128, "test_lesion.py": 115,
                "test_train.py": 95, "test_llm_study.py": 61, "test_vit.py": 55, "test_paths.py": 54,
                "test_multihost.py": 46, "test_depth_series.py": 40, "test_samplers.py": 34, "test_lattice.py": 33,
                "test_models.py": 30, "test_vit_study.py": 25, "test_vit_parallel.py": 22, "test_torch_import.py": 20,
                "test_mains.py": 20, "test_per_example_paths.py": 20, "test_chain_speed.py": 19, "test_llama.py": 15}


def pytest_collection_modifyitems(session, config, items):
  del session, config
  items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable within a file
