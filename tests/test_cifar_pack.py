import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from resnet_ensembles.data import cifar10 as data
from resnet_ensembles.data import pack as cifar_pack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_folder(root: str) -> str:
  """Both splits, 3 images per class: noisy RGB JPEGs, one greyscale JPEG, one PNG, one upper-case
  suffix, plus a non-image file that both readers must skip."""
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for label, c in enumerate(data.CIFAR10_CLASSES):
      d = os.path.join(root, split, c)
      os.makedirs(d)
      for i in range(3):
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        if c == "cat" and i == 0:
          Image.fromarray(img).save(os.path.join(d, f"{i:04d}.png"))
        elif c == "dog" and i == 1:
          Image.fromarray(img[..., 0]).save(os.path.join(d, f"{i:04d}.jpg"), quality=75)
        elif c == "ship" and i == 2:
          Image.fromarray(img).save(os.path.join(d, f"{i:04d}.JPEG"), format="JPEG", quality=75)
        else:
          Image.fromarray(img).save(os.path.join(d, f"{i:04d}.jpg"), quality=75)
      with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("not an image")
  with open(os.path.join(root, cifar_pack.METADATA_FILE), "w") as f:
    json.dump({"description": "tiny test copy"}, f)
  return root


@pytest.fixture
def tiny(tmp_path):
  folder = _tiny_folder(str(tmp_path / "folder"))
  pack = str(tmp_path / "tiny.cifarpack")
  cifar_pack.pack_folder(folder, pack)
  return folder, pack


def test_a_pack_is_read_without_jax(tiny):
  """The pack reader and the folder listing it shares import numpy and PIL only (data.folder, data.pack)."""
  _, pack = tiny
  code = ("import sys; from resnet_ensembles.data import pack; x, y = pack._decode_split(sys.argv[1], "
          "open(sys.argv[1], 'rb').read(), 'test'); assert x.shape == (30, 32, 32, 3); "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'tensorflow', 'flax')))")
  out = subprocess.run([sys.executable, "-c", code, pack], cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_pack_reads_as_the_folder(tiny, tmp_path):
  folder, pack = tiny
  for split in ("train", "test"):
    x, y = cifar_pack.read_pack_split(pack, split, cache_dir=str(tmp_path / "pack_cache"))
    fx, fy = data.load_folder_split(folder, split, cache_dir=str(tmp_path / "folder_cache"))
    assert x.dtype == np.uint8 and y.dtype == np.int32 and x.shape == (30, 32, 32, 3)
    np.testing.assert_array_equal(x, fx)
    np.testing.assert_array_equal(y, fy)
  info = cifar_pack.read_pack_info(pack)
  assert info["description"] == "tiny test copy" and info["version"] == cifar_pack.VERSION
  test = info["splits"]["test"]
  assert test["counts"] == [3] * 10 and test["classes"] == list(data.CIFAR10_CLASSES)
  assert test["files"][:3] == ["airplane/0000.jpg", "airplane/0001.jpg", "airplane/0002.jpg"]
  assert "cat/0000.png" in test["files"] and "ship/0002.JPEG" in test["files"]
  assert not any(f.endswith(".txt") for f in test["files"])
  # Deterministic: packing again gives the same bytes (so the same cache key).
  again = str(tmp_path / "again.cifarpack")
  cifar_pack.pack_folder(folder, again)
  with open(pack, "rb") as a, open(again, "rb") as b:
    assert a.read() == b.read()


def test_load_cifar10_accepts_a_pack(tiny, tmp_path, monkeypatch):
  folder, pack = tiny
  cache = tmp_path / "cache"
  monkeypatch.setenv("RESNET_ENSEMBLES_CACHE", str(cache))
  from_pack = data.load_cifar10("folder", pack)
  from_folder = data.load_cifar10("folder", folder)
  for split in ("train", "test"):
    for a, b in zip(from_pack[split], from_folder[split]):
      np.testing.assert_array_equal(a, b)
  assert sum(n.startswith("cifar10pack_") for n in os.listdir(cache)) == 2  # decoded once, cached
  monkeypatch.setenv("CIFAR10_DIR", pack)
  assert data.resolve_source("auto") == ("folder", pack)
  np.testing.assert_array_equal(data.load_cifar10("auto")["test"][0], from_folder["test"][0])  # from the cache


def _expect_one_line(path, match, tmp_path, exc=ValueError):
  with pytest.raises(exc, match=match) as e:
    cifar_pack.read_pack_split(str(path), "test", cache_dir=str(tmp_path / "cache"))
  assert "\n" not in str(e.value)


def test_bad_packs_fail_with_one_line(tiny, tmp_path):
  folder, pack = tiny
  with open(pack, "rb") as f:
    blob = f.read()
  header, start = cifar_pack._parse(pack, blob)
  test = header["splits"]["test"]

  def write(name, content):
    path = tmp_path / name
    path.write_bytes(content)
    return path

  _expect_one_line(tmp_path / "missing.cifarpack", "pack file not found", tmp_path, FileNotFoundError)
  _expect_one_line(write("notes.cifarpack", b"just some text\n"), "is not a CIFAR-10 pack file", tmp_path)
  _expect_one_line(write("empty.cifarpack", b""), "is not a CIFAR-10 pack file", tmp_path)
  _expect_one_line(write("v9.cifarpack", blob[:8] + (9).to_bytes(4, "little") + blob[12:]),
                   "format version 9; this code reads version 1", tmp_path)
  _expect_one_line(write("short.cifarpack", blob[:len(blob) - 100]), "is truncated", tmp_path)
  _expect_one_line(write("headless.cifarpack", blob[:40]), "is truncated", tmp_path)
  flipped = bytearray(blob)
  flipped[start + test["stream_offset"] + test["stream_size"] // 2] ^= 0xFF
  _expect_one_line(write("flipped.cifarpack", bytes(flipped)), "corrupt test payload", tmp_path)
  flipped = bytearray(blob)
  flipped[30] ^= 0xFF
  _expect_one_line(write("badhead.cifarpack", bytes(flipped)), "corrupt header", tmp_path)
  # A header whose checksum disagrees with intact image bytes.
  import lzma
  header["splits"]["test"]["sha256"] = "0" * 64
  head = lzma.compress(json.dumps(header).encode())
  forged = cifar_pack._PREFIX.pack(cifar_pack.MAGIC, cifar_pack.VERSION, len(head)) + head + blob[start:]
  _expect_one_line(write("forged.cifarpack", forged), "checksum mismatch in the test split", tmp_path)
  # Through load_cifar10 a non-pack regular file reports the same line (not "folder split not found").
  with pytest.raises(ValueError, match="is not a CIFAR-10 pack file"):
    data.load_cifar10("folder", str(tmp_path / "notes.cifarpack"), str(tmp_path / "cache"))
  with pytest.raises(ValueError, match=r"holds splits \['test'\], not 'train'"):
    only_test = str(tmp_path / "test_only.cifarpack")
    cifar_pack.pack_folder(folder, only_test, splits=("test",))
    cifar_pack.read_pack_split(only_test, "train", str(tmp_path / "cache"))


def test_cli(tiny, tmp_path):
  folder, _ = tiny
  run = lambda *args: subprocess.run([sys.executable, "-m", "experiments.pack_cifar10", *args], cwd=ROOT,
                                     capture_output=True, text=True, timeout=60)
  out = str(tmp_path / "cli.cifarpack")
  ok = run(f"--folder={folder}", f"--out={out}", "--description=CLI copy")
  assert ok.returncode == 0, ok.stderr
  assert ok.stdout.startswith(f"wrote {out}: ") and "ratio" in ok.stdout and "'CLI copy'" in ok.stdout
  assert cifar_pack.read_pack_info(out)["description"] == "CLI copy"
  bad = run(f"--folder={tmp_path / 'nope'}", f"--out={out}")
  assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0
  assert bad.stderr.startswith("error: FileNotFoundError: CIFAR-10 folder not found")


def test_real_test_split_matches_the_folder(cifar_root, tmp_path):
  if not os.path.isdir(os.path.join(cifar_root, "test")):
    pytest.skip("no test split in the CIFAR-10 folder copy")
  pack = str(tmp_path / "test.cifarpack")
  info = cifar_pack.pack_folder(cifar_root, pack, splits=("test",))
  assert info["splits"]["test"]["num_images"] == 10_000
  x, y = cifar_pack.read_pack_split(pack, "test", cache_dir=str(tmp_path / "cache"))
  files, labels = cifar_pack.list_split(cifar_root, "test")
  np.testing.assert_array_equal(y, labels)
  # 200 images against the folder loader's own decode of the files on disk.
  for i in np.random.default_rng(0).choice(len(files), 200, replace=False):
    np.testing.assert_array_equal(x[i], data._decode(os.path.join(cifar_root, "test", files[i])))
