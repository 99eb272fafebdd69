import os

import jax
import numpy as np
import pytest
from PIL import Image

from resnet_ensembles.data import cifar10 as data
from resnet_ensembles.data import folder as data_folder


def test_folder_copy_loads_cifar10(cifar, cifar_root):
  (xtr, ytr), (xte, yte) = cifar["train"], cifar["test"]
  assert xtr.shape == (50_000, 32, 32, 3) and xte.shape == (10_000, 32, 32, 3)
  assert xtr.dtype == np.uint8 and ytr.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(ytr), [5000] * 10)
  np.testing.assert_array_equal(np.bincount(yte), [1000] * 10)
  # Labels follow CIFAR-10's order: the first test image of class 8 is a ship, decoded the same way.
  first_ship = int(np.argmax(yte == data.CIFAR10_CLASSES.index("ship")))
  name = sorted(os.listdir(os.path.join(cifar_root, "test", "ship")))[0]
  ref = np.asarray(Image.open(os.path.join(cifar_root, "test", "ship", name)).convert("RGB"))
  np.testing.assert_array_equal(xte[first_ship], ref)


def _fake_folder(root, classes, per_class=2, split="train"):
  for c in classes:
    os.makedirs(os.path.join(root, split, c))
    for i in range(per_class):
      Image.fromarray(np.full((32, 32, 3), i * 40, np.uint8)).save(os.path.join(root, split, c, f"{i}.png"))


def test_bad_folders_are_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="expected <root>/train/<class>"):
    data.load_folder_split(str(tmp_path / "missing"), "train")
  _fake_folder(str(tmp_path / "wrong"), ["cat", "dog"])
  with pytest.raises(ValueError, match="expected the 10 CIFAR-10 classes"):
    data.load_folder_split(str(tmp_path / "wrong"), "train")
  _fake_folder(str(tmp_path / "empty"), data.CIFAR10_CLASSES, per_class=0)
  with pytest.raises(ValueError, match="holds no .jpg/.png images"):
    data.load_folder_split(str(tmp_path / "empty"), "train")
  _fake_folder(str(tmp_path / "ok"), data.CIFAR10_CLASSES, per_class=2)
  x, y = data.load_folder_split(str(tmp_path / "ok"), "train", cache_dir=str(tmp_path / "cache"))
  assert x.shape == (20, 32, 32, 3) and list(y[:4]) == [0, 0, 1, 1]
  assert len(os.listdir(tmp_path / "cache")) == 1  # decoded once, cached
  os.symlink(tmp_path / "ok", tmp_path / "link")      # the same copy reached another way (another checkout's
  x2, _ = data.load_folder_split(str(tmp_path / "link"), "train", cache_dir=str(tmp_path / "cache"))  # ../shared)
  assert len(os.listdir(tmp_path / "cache")) == 1 and np.array_equal(x2, x)  # shares its cache


def test_source_precedence(monkeypatch):
  monkeypatch.delenv("CIFAR10_DIR", raising=False)
  assert data.resolve_source("auto") == ("tfds", None)
  monkeypatch.setenv("CIFAR10_DIR", "/some/copy")
  assert data.resolve_source("auto") == ("folder", "/some/copy")
  assert data.resolve_source("auto", "/explicit") == ("folder", "/explicit")
  assert data.resolve_source("tfds") == ("tfds", None)
  monkeypatch.delenv("CIFAR10_DIR")
  with pytest.raises(ValueError, match="CIFAR10_DIR"):
    data.resolve_source("folder")


def test_augment_is_pad_crop_flip():
  img = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(1, 32, 32, 3).repeat(64, 0)
  out = np.asarray(data.augment(jax.random.PRNGKey(0), img))
  np.testing.assert_array_equal(out, data.augment(jax.random.PRNGKey(0), img))  # deterministic per key
  base = np.asarray(data.normalize(img[:1]))[0]
  padded = np.pad(base, ((4, 4), (4, 4), (0, 0)))
  candidates = [padded[i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
  candidates += [c[:, ::-1] for c in candidates]
  for o in out:  # every output is one of the 162 crops (or their mirror images)
    assert min(np.abs(o - c).max() for c in candidates) < 1e-6
  assert len({o.tobytes() for o in out}) > 20


def test_a_folder_is_named_by_its_metadata_content_or_path(tmp_path, cifar_root):
  from resnet_ensembles.data import for_run
  root = str(tmp_path / "copy")
  _fake_folder(root, data.CIFAR10_CLASSES, per_class=1)
  assert for_run.describe_folder(root) == f"CIFAR-10 (image folder {root})"   # unknown: its path
  with open(os.path.join(root, data_folder.METADATA_FILE), "w") as f:
    f.write('{"description": "CIFAR-10 (my PNG copy)"}')
  assert for_run.describe_folder(root) == "CIFAR-10 (my PNG copy)"           # its own dataset.json
  # The shared JPEG copy holds no metadata file (read-only); it is recognised by its content, at any path.
  assert for_run.describe_folder(cifar_root) == "CIFAR-10 (JPEG q75 copy)"
  renamed = str(tmp_path / "elsewhere")
  os.symlink(cifar_root, renamed)
  assert for_run.describe_folder(renamed) == "CIFAR-10 (JPEG q75 copy)"
  # One changed file (a different size) is a different copy.
  changed = str(tmp_path / "changed")
  _fake_folder(changed, data.CIFAR10_CLASSES, per_class=1)
  assert for_run.folder_fingerprint(changed) == for_run.folder_fingerprint(root)  # dataset.json is not content
  with open(os.path.join(changed, "train", "cat", "0.png"), "ab") as f:
    f.write(b"\0")
  assert for_run.folder_fingerprint(changed) != for_run.folder_fingerprint(root)


def _bad_image_error(root, cache_dir) -> str:
  with pytest.raises(ValueError) as e:
    data.load_folder_split(root, "train", cache_dir=cache_dir)
  assert "\n" not in str(e.value) and not os.path.exists(cache_dir)  # one line; nothing cached
  return str(e.value)


def test_bad_images_and_folders_are_one_line_naming_the_file(tmp_path):
  """A garbage, truncated or wrongly sized image, a missing or empty class folder: one line naming it, not a
  PIL traceback from the decoding threads; nothing is cached. The pack reader names the packed file too."""
  from resnet_ensembles.data import pack
  root, cache = str(tmp_path / "f"), str(tmp_path / "cache")
  _fake_folder(root, data.CIFAR10_CLASSES, per_class=2)
  bad = os.path.join(root, "train", "cat", "1.png")
  with open(bad, "wb") as f:
    f.write(b"not an image" * 50)
  assert _bad_image_error(root, cache).startswith(f"{bad}: not a readable image (UnidentifiedImageError: ")
  packed = str(tmp_path / "bad.cifarpack")
  pack.pack_folder(root, packed, splits=("train",))  # the packer copies bytes; the reader decodes and names
  with pytest.raises(ValueError, match=f"^{packed}: train/cat/1.png: not a readable image"):
    pack.read_pack_split(packed, "train", cache_dir=cache)
  jpeg = os.path.join(root, "train", "cat", "1.jpg")
  os.remove(bad)
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(jpeg, quality=90)
  os.truncate(jpeg, os.path.getsize(jpeg) // 2)
  assert _bad_image_error(root, cache).startswith(f"{jpeg}: not a readable image (OSError: image file is truncated")
  Image.fromarray(np.zeros((28, 30, 3), np.uint8)).save(jpeg)
  assert _bad_image_error(root, cache) == f"{jpeg}: a 30x28 image; CIFAR-10 images are 32x32"
  os.remove(jpeg)
  for name in os.listdir(os.path.join(root, "train", "dog")):
    os.remove(os.path.join(root, "train", "dog", name))
  assert _bad_image_error(root, cache).startswith(f"{os.path.join(root, 'train', 'dog')}: no .jpg/.png images")
  os.rmdir(os.path.join(root, "train", "dog"))
  assert "(missing ['dog'], unexpected [])" in _bad_image_error(root, cache)


def test_training_on_a_bad_folder_fails_before_compiling(tmp_path):
  """The folder is read (and its errors raised) before any step compiles; the workdir holds only the lock."""
  from experiments.configs import cifar10
  from resnet_ensembles import training
  root = str(tmp_path / "f")
  for split in ("train", "test"):
    _fake_folder(root, data.CIFAR10_CLASSES, per_class=1, split=split)
  with open(os.path.join(root, "test", "ship", "0.png"), "wb") as f:
    f.write(b"\xff\xd8garbage")
  c = cifar10.get_config("resnet8")
  c.data.source, c.data.folder, c.data.cache_dir = "folder", root, str(tmp_path / "cache")
  with pytest.raises(ValueError, match=f"^{root}/test/ship/0.png: not a readable image"):
    training.train_and_evaluate(c, str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run") == [".lock"]


def test_imagenet_folder_listing_errors_name_the_folder(tmp_path):
  """ImageNet folders are listed (not decoded) on the host: a missing split, a split without images and a
  class folder without images fail in one line (a corrupt JPEG surfaces in tf.data: see folder_files)."""
  from resnet_ensembles.data import imagenet
  root = str(tmp_path / "inet")
  with pytest.raises(FileNotFoundError, match=f"image folder split not found: {root}/val "):
    imagenet.folder_files(root, "val")
  for c in ("n01", "n02", "n03"):
    os.makedirs(os.path.join(root, "val", c))
  with pytest.raises(ValueError, match=f"^{root}/val holds no .jpg/.jpeg/.png images in class folders$"):
    imagenet.folder_files(root, "val")
  for c in ("n01", "n03"):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(os.path.join(root, "val", c, "a.JPEG"))
  with pytest.raises(ValueError, match=f"^{root}/val/n02: no .jpg/.jpeg/.png images \\(1 empty class folder"):
    imagenet.folder_files(root, "val")
  Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(os.path.join(root, "val", "n02", "b.jpg"))
  files, labels, classes = imagenet.folder_files(root, "val")
  assert list(labels) == [0, 1, 2] and classes == ["n01", "n02", "n03"]


def test_loads_started_together_decode_each_split_once(small_cifar_root, tmp_path, monkeypatch):
  """Two loaders of the same folder at once (as several mains or test workers start together): one decodes,
  the other waits for its cache; both get the same arrays."""
  import threading
  import time
  decoded, decode = [], data._decode

  def slow_first(path):  # the first image takes long enough that the other loader surely arrives meanwhile
    decoded.append(path)
    if len(decoded) == 1:
      time.sleep(0.5)
    return decode(path)
  monkeypatch.setattr(data, "_decode", slow_first)
  out = [None, None]

  def load(i):
    out[i] = data.load_cifar10("folder", small_cifar_root, cache_dir=str(tmp_path / "cache"))
  threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(decoded) == len(set(decoded)) == 256 + 100  # every image decoded exactly once
  for split in ("train", "test"):
    np.testing.assert_array_equal(out[0][split][0], out[1][split][0])
    np.testing.assert_array_equal(out[0][split][1], out[1][split][1])
