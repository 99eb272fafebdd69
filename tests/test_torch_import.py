"""torch_reader / torch_import: both torch.save layouts written here by a test-only writer, refusals and
bad state dicts as one line, and the real akamaster ResNet-20 against a numpy forward of PyTorch's."""
import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import types
import zipfile

import jax
import numpy as np
import pytest

from resnet_ensembles.data import cifar10 as data
from resnet_ensembles.store import checkpoints, torch_import, torch_reader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.environ.get("PRETRAINED_DIR") or os.path.join(os.path.dirname(ROOT), "shared", "data",
                                                               "pretrained")
RESNET20 = os.path.join(PRETRAINED, "akamaster-cifar10", "resnet20-12fca82f.th")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


# --- a test-only torch.save writer: pickle with persistent ids, names resolved through fake modules ---

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.bool_): "BoolStorage",
                  np.dtype(np.uint8): "ByteStorage"}


class Storage:
  def __init__(self, key: str, flat: np.ndarray):
    self.key, self.flat = key, np.ascontiguousarray(flat).ravel()


class Tensor:
  """A view (offset, size, stride in elements) of a Storage; `parameter` wraps it like nn.Parameter."""
  def __init__(self, storage, offset, size, stride, parameter=False):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
    self.parameter = parameter

  def __reduce__(self):
    mods = sys.modules["torch._utils"]
    if self.parameter:
      data = Tensor(self.storage, self.offset, self.size, self.stride)
      return (mods._rebuild_parameter, (data, True, collections.OrderedDict()))
    return (mods._rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False,
                                      collections.OrderedDict()))


class Evil:
  def __init__(self, command: str):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


@pytest.fixture
def fake_torch(monkeypatch):
  """Modules `torch` and `torch._utils` just long enough for pickle to write their global names."""
  torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
  for name in set(_STORAGE_NAMES.values()):
    setattr(torch, name, type(name, (), {"__module__": "torch"}))
  for name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
    fn = lambda *a: None
    fn.__module__, fn.__name__, fn.__qualname__ = "torch._utils", name, name
    setattr(utils, name, fn)
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return torch


class _Writer(pickle.Pickler):
  def __init__(self, f, legacy: bool):
    super().__init__(f, protocol=2)
    self.legacy, self.storages = legacy, {}

  def persistent_id(self, obj):
    if not isinstance(obj, Storage):
      return None
    self.storages[obj.key] = obj
    kind = getattr(sys.modules["torch"], _STORAGE_NAMES[obj.flat.dtype])
    pid = ("storage", kind, obj.key, "cpu", obj.flat.size)
    return pid + (None,) if self.legacy else pid


def write_torch(path, obj, layout: str):
  """`torch.save`'s legacy stream or zip archive (layout "legacy" or "zip") of `obj`."""
  buf = io.BytesIO()
  writer = _Writer(buf, legacy=layout == "legacy")
  writer.dump(obj)
  if layout == "zip":
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
      z.writestr("archive/data.pkl", buf.getvalue())
      z.writestr("archive/byteorder", "little")
      for key, s in writer.storages.items():
        z.writestr(f"archive/data/{key}", s.flat.astype(s.flat.dtype.newbyteorder("<")).tobytes())
      z.writestr("archive/version", "3\n")
    return
  with open(path, "wb") as f:
    for head in (torch_reader.LEGACY_MAGIC, torch_reader.LEGACY_PROTOCOL,
                 {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4, "long": 8}}):
      pickle.dump(head, f, protocol=2)
    f.write(buf.getvalue())
    keys = sorted(writer.storages)
    pickle.dump(keys, f, protocol=2)
    for key in keys:
      flat = writer.storages[key].flat
      f.write(struct.pack("<q", flat.size) + flat.astype(flat.dtype.newbyteorder("<")).tobytes())


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_round_trip_of_strided_views(tmp_path, fake_torch, layout):
  base = np.arange(30, dtype=np.float32) * 0.5
  shared = Storage("0", base)
  obj = {"best_prec1": 91.5, "state_dict": collections.OrderedDict([
      ("t", Tensor(shared, 2, (4, 3), (1, 4))),        # a transposed view at an offset
      ("s", Tensor(shared, 5, (2, 2, 3), (12, 1, 4))),  # non-monotone strides, same storage
      ("w", Tensor(Storage("1", np.linspace(-1, 1, 6)), 0, (2, 3), (3, 1), parameter=True)),
      ("n", Tensor(Storage("2", np.array([7, -3], np.int64)), 1, (), ())),
      ("h", Tensor(Storage("3", np.array([1.5, 2.5], np.float16)), 0, (2,), (1,))),
      ("b", Tensor(Storage("4", np.array([True, False, True])), 0, (3,), (1,))),
      ("u", Tensor(Storage("5", np.arange(4, dtype=np.uint8)), 0, (2, 2), (2, 1))),
      ("i", Tensor(Storage("6", np.arange(3, dtype=np.int32)), 0, (3,), (1,)))])}
  path = str(tmp_path / f"tiny.{layout}")
  write_torch(path, obj, layout)
  got = torch_reader.load(path)
  sd = got["state_dict"]
  assert got["best_prec1"] == 91.5 and isinstance(sd, collections.OrderedDict) and list(sd) == list(obj["state_dict"])
  np.testing.assert_array_equal(sd["t"], base[2:14].reshape(3, 4).T)
  np.testing.assert_array_equal(sd["s"], np.lib.stride_tricks.as_strided(base[5:], (2, 2, 3), (48, 4, 16)))
  np.testing.assert_array_equal(sd["w"], np.linspace(-1, 1, 6).reshape(2, 3))
  assert sd["n"].shape == () and sd["n"] == -3 and sd["n"].dtype == np.int64
  assert sd["h"].dtype == np.float16 and sd["b"].dtype == np.bool_ and sd["u"].dtype == np.uint8
  np.testing.assert_array_equal(sd["b"], [True, False, True])
  assert sd["i"].dtype == np.int32 and all(a.flags["C_CONTIGUOUS"] for a in sd.values())
  assert torch_reader.file_format(path) == layout


def test_out_of_bounds_view_is_refused(tmp_path, fake_torch):
  path = str(tmp_path / "oob.th")
  write_torch(path, {"x": Tensor(Storage("0", np.zeros(4, np.float32)), 2, (3,), (1,))}, "legacy")
  with pytest.raises(ValueError, match=r"reads past its storage of 4 elements"):
    torch_reader.load(path)


@pytest.mark.parametrize("layout", ["legacy", "zip", "plain"])
def test_forbidden_global_is_refused_without_running(tmp_path, fake_torch, layout):
  marker = tmp_path / "ran"
  evil = {"state_dict": Evil(f"touch {marker}")}
  path = str(tmp_path / "evil.th")
  if layout == "plain":
    with open(path, "wb") as f:
      pickle.dump(evil, f, protocol=2)
  else:
    write_torch(path, evil, layout)
  with pytest.raises(ValueError) as e:
    torch_reader.load(path)
  assert str(e.value) == (f"refused to unpickle {os.system.__module__}.system in {path}: only tensors, "
                          "storages and ordered dicts are allowed")
  assert type(e.value) is ValueError and not marker.exists()


def test_non_torch_file_is_one_line(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("# not a checkpoint\n")
  with pytest.raises(ValueError, match=r"notes.txt is not a torch.save file") as e:
    torch_reader.load(str(path))
  assert "\n" not in str(e.value)
  pickled = tmp_path / "plain.pkl"
  pickled.write_bytes(pickle.dumps({"a": 1}))
  with pytest.raises(ValueError, match=r"not a torch.save file \(no torch magic number\)"):
    torch_reader.load(str(pickled))


# --- state dicts that do not fit ---

def _random_state_dict(depth: int, module: bool = True) -> collections.OrderedDict:
  rng = np.random.default_rng(0)
  model = torch_import.build_model(depth)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)))
  sd = collections.OrderedDict()
  for key, (path, kind) in torch_import._torch_names(depth).items():
    shape = shapes
    for p in path:
      shape = shape[p]
    a = rng.normal(size=torch_import._torch_shape(shape.shape, kind)).astype(np.float32)
    sd[("module." if module else "") + key] = np.abs(a) if key.endswith("running_var") else a
  sd["module.bn1.num_batches_tracked"] = np.array(5, np.int64)
  return sd


def test_state_dict_maps_every_tensor():
  sd = _random_state_dict(8)
  depth, v = torch_import.state_dict_to_variables(sd)
  assert depth == 8
  np.testing.assert_array_equal(v["params"]["stem_conv"]["kernel"], sd["module.conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(v["params"]["head"]["kernel"], sd["module.linear.weight"].T)
  np.testing.assert_array_equal(v["batch_stats"]["block_02"]["bn2"]["var"], sd["module.layer3.0.bn2.running_var"])
  np.testing.assert_array_equal(v["params"]["block_01"]["bn1"]["scale"], sd["module.layer2.0.bn1.weight"])


@pytest.mark.parametrize("change, message", [
    (lambda sd: sd.pop("module.layer2.0.bn1.running_var"),
     r"^the state dict has no 'layer2.0.bn1.running_var' \(needed by a ResNet-8\)$"),
    (lambda sd: sd.__setitem__("module.layer1.0.conv2.weight", np.zeros((16, 16, 1, 3), np.float32)),
     r"^'layer1.0.conv2.weight' has shape \(16, 16, 1, 3\), expected \(16, 16, 3, 3\) for a ResNet-8$"),
    (lambda sd: sd.__setitem__("module.fc.weight", np.zeros((10, 64), np.float32)),
     r"^the state dict has unexpected key 'fc.weight'; a ResNet-8 has no such tensor$"),
    (lambda sd: [sd.pop(k) for k in list(sd) if "layer3" in k],
     r"^the state dict is not a 3-stage CIFAR ResNet with n blocks per stage \(layer1: 1, layer2: 1, layer3: 0\)$"),
])
def test_bad_state_dicts_are_one_line(change, message):
  sd = _random_state_dict(8)
  change(sd)
  with pytest.raises(ValueError, match=message):
    torch_import.state_dict_to_variables(sd)


def test_depth_mismatch_is_one_line():
  with pytest.raises(ValueError, match=r"^the state dict holds a ResNet-8 \(3 blocks\), not the requested depth 20$"):
    torch_import.state_dict_to_variables(_random_state_dict(8, module=False), depth=20)


# --- the real akamaster ResNet-20 against PyTorch's semantics, in numpy (NCHW) ---

def _conv(x, w, stride):
  """Direct 3x3 convolution, padding 1, as torch.nn.Conv2d: x [N,C,H,W], w [O,C,3,3]."""
  n, _, h, wd = x.shape
  xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
  ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
  out = np.zeros((n, w.shape[0], ho, wo))
  for dy in range(3):
    for dx in range(3):
      patch = xp[:, :, dy:dy + stride * ho:stride, dx:dx + stride * wo:stride]
      out += np.einsum("nchw,oc->nohw", patch, w[:, :, dy, dx])
  return out


def _bn(x, sd, name):
  g = lambda t: sd[f"module.{name}.{t}"].astype(np.float64)[None, :, None, None]
  return (x - g("running_mean")) / np.sqrt(g("running_var") + 1e-5) * g("weight") + g("bias")


def _shortcut_a(x, planes):
  """akamaster's LambdaLayer: x[:, :, ::2, ::2] padded with planes // 4 zero channels on each side."""
  x = x[:, :, ::2, ::2]
  return np.pad(x, ((0, 0), (planes // 4, planes // 4), (0, 0), (0, 0)))


def torch_reference_logits(sd, images_uint8, n):
  relu = lambda x: np.maximum(x, 0)
  x = (images_uint8.astype(np.float64) / 255 - IMAGENET_MEAN) / IMAGENET_STD
  x = x.transpose(0, 3, 1, 2)
  x = relu(_bn(_conv(x, sd["module.conv1.weight"], 1), sd, "bn1"))
  for stage, planes in enumerate((16, 32, 64), start=1):
    for i in range(n):
      name, stride = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
      out = relu(_bn(_conv(x, sd[f"module.{name}.conv1.weight"], stride), sd, f"{name}.bn1"))
      out = _bn(_conv(out, sd[f"module.{name}.conv2.weight"], 1), sd, f"{name}.bn2")
      x = relu(out + (_shortcut_a(x, planes) if stride != 1 else x))
  pooled = x.mean(axis=(2, 3))
  return pooled @ sd["module.linear.weight"].T.astype(np.float64) + sd["module.linear.bias"]


@pytest.fixture(scope="module")
def resnet20_file():
  if not os.path.exists(RESNET20):
    pytest.skip(f"akamaster ResNet-20 not found at {RESNET20} (set PRETRAINED_DIR to the pretrained/ folder)")
  return RESNET20


def test_resnet20_matches_a_numpy_forward_of_pytorch(resnet20_file):
  sd = torch_reader.load(resnet20_file)["state_dict"]
  depth, variables = torch_import.state_dict_to_variables(sd, depth=20)
  model = torch_import.build_model(depth)
  images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  got = np.asarray(model.apply(variables, data.normalize_for(model, images)))
  want = torch_reference_logits(sd, images, n=3)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_shortcut_keeps_identity_channels_in_the_middle():
  model = torch_import.build_model(20)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)))
  x = np.random.default_rng(2).normal(size=(2, 8, 8, 16)).astype(np.float32) + 3
  y = np.asarray(model.apply(variables, x, 3, method=model.shortcut))  # block 3: first of stage 2
  assert y.shape == (2, 4, 4, 32)
  nonzero = np.flatnonzero(np.abs(y).sum(axis=(0, 1, 2)))
  np.testing.assert_array_equal(nonzero, np.arange(8, 24))
  np.testing.assert_array_equal(y, _shortcut_a(x.transpose(0, 3, 1, 2), 32).transpose(0, 2, 3, 1))


def test_main_end_to_end(resnet20_file, tmp_path):
  run = lambda *args: subprocess.run([sys.executable, "-m", "experiments.import_torch", *args], cwd=ROOT,
                                     capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  out = tmp_path / "resnet20"
  done = run(f"--checkpoint={resnet20_file}", f"--out_dir={out}", "--licence=BSD 2-clause")
  assert done.returncode == 0, done.stderr
  assert "ResNet-20, 9 blocks, 269,722 params, sha256 12fca82f0bebc413" in done.stdout
  model, variables, config = checkpoints.load_trained(str(out))
  assert (model.depth, model.variant, model.shortcut_pad, model.input_stats) == (20, "original", "both", "imagenet")
  src = config.imported_from
  assert (src.file, src.format, src.best_prec1) == ("resnet20-12fca82f.th", "legacy", pytest.approx(91.78))
  assert src.sha256.startswith("12fca82f") and src.licence.startswith("BSD 2-clause (Copyright (c) 2018, Yerlan Idelbayev") and (out / "LICENSE").exists()
  bad = run(f"--checkpoint={resnet20_file}", f"--out_dir={tmp_path / 'x'}", "--depth=32")
  assert bad.returncode == 1
  assert bad.stderr.strip() == "error: ValueError: the state dict holds a ResNet-20 (9 blocks), not the requested depth 32"


def test_all_akamaster_regenerates_the_weights_beside_the_committed_config(resnet20_file, tmp_path):
  """--all_akamaster: the git-ignored variables.msgpack of each imported folder, byte-identical to a fresh
  import, with the committed config.json (provenance) left as it is; a source of another sha256 is refused."""
  run = lambda *args: subprocess.run([sys.executable, "-m", "experiments.import_torch", *args], cwd=ROOT,
                                     capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  fresh = tmp_path / "fresh"
  assert run(f"--checkpoint={resnet20_file}", f"--out_dir={fresh}").returncode == 0
  source, imported = tmp_path / "source", tmp_path / "imported"
  source.mkdir()
  os.symlink(resnet20_file, source / os.path.basename(resnet20_file))
  (imported / "resnet20").mkdir(parents=True)
  committed = json.loads((fresh / "config.json").read_text())
  committed["imported_from"]["importer_commit"] = "an older commit"
  (imported / "resnet20" / "config.json").write_text(json.dumps(committed))
  done = run("--all_akamaster", f"--source_dir={source}", f"--imported_dir={imported}")
  assert done.returncode == 0, done.stderr
  assert (imported / "resnet20" / "variables.msgpack").read_bytes() == (fresh / "variables.msgpack").read_bytes()
  assert json.loads((imported / "resnet20" / "config.json").read_text()) == committed
  committed["imported_from"]["sha256"] = "0" * 64
  (imported / "resnet20" / "config.json").write_text(json.dumps(committed))
  bad = run("--all_akamaster", f"--source_dir={source}", f"--imported_dir={imported}")
  assert bad.returncode == 1 and "not the 0000" in bad.stderr.strip().splitlines()[-1], bad.stderr[-500:]
