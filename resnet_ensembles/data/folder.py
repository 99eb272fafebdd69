"""The CIFAR-10 image-folder layout, `<root>/<split>/<class>/*.jpg|png`: its listing and its decode.

One definition for both readers of such a folder, the folder loader (`data.cifar10.load_folder_split`) and
the packer/reader of `*.cifarpack` files (`data.pack`), so a pack decodes to the very arrays of the folder it
was made from. numpy, PIL and the standard library only (no JAX): a pack can be read without it.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
METADATA_FILE = "dataset.json"  # optional, in the folder root: {"description": "..."}
KNOWN_COPIES = {"f09789290e31607d": "CIFAR-10 (JPEG q75 copy)"}  # ../shared/data/cifar10-jpeg, 60,000 files
HOME_CACHE = os.path.join("~", ".cache", "resnet_ensembles")


def cache_dir_or_default(cache_dir: str | None) -> str:
  """Where decoded data is cached: `cache_dir`, else $RESNET_ENSEMBLES_CACHE, else ~/.cache/resnet_ensembles."""
  return cache_dir or os.environ.get("RESNET_ENSEMBLES_CACHE") or os.path.expanduser(HOME_CACHE)


def decode_checked(source, name: str) -> np.ndarray:
  """uint8 [32, 32, 3] of one image file (a path or a file object) decoded by PIL; a file that PIL cannot
  read or that is not 32x32 is a one-line ValueError naming `name`, not a PIL traceback from a thread."""
  from PIL import Image
  try:
    with Image.open(source) as im:
      image = np.asarray(im.convert("RGB"), dtype=np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # UnidentifiedImageError, truncated
    why = (str(e).strip().splitlines() or [""])[0][:200]
    raise ValueError(f"{name}: not a readable image ({type(e).__name__}: {why})") from None
  if image.shape != (32, 32, 3):
    raise ValueError(f"{name}: a {image.shape[1]}x{image.shape[0]} image; CIFAR-10 images are 32x32")
  return image


def list_split(root: str, split: str) -> tuple[list[str], list[int]]:
  """(relative file names, labels) of `<root>/<split>` in the folder loader's order and with its checks."""
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(f"CIFAR-10 folder split not found: {split_dir} "
                            f"(expected <root>/{split}/<class>/*.jpg with the 10 CIFAR-10 classes)")
  classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
  if tuple(classes) != CIFAR10_CLASSES:
    missing, extra = sorted(set(CIFAR10_CLASSES) - set(classes)), sorted(set(classes) - set(CIFAR10_CLASSES))
    raise ValueError(f"{split_dir} has class folders {classes} (missing {missing}, unexpected {extra}); "
                     f"expected the 10 CIFAR-10 classes {list(CIFAR10_CLASSES)}")
  files, labels, empty = [], [], []
  for label, name in enumerate(classes):
    names = sorted(f for f in os.listdir(os.path.join(split_dir, name)) if f.lower().endswith(IMAGE_SUFFIXES))
    files += [f"{name}/{f}" for f in names]
    labels += [label] * len(names)
    empty += [] if names else [name]
  if not files:
    raise ValueError(f"{split_dir} holds no .jpg/.png images (expected {split}/<class>/*.jpg)")
  if empty:  # a half-copied folder: training on it would silently lose classes
    raise ValueError(f"{os.path.join(split_dir, empty[0])}: no .jpg/.png images (empty class folders: {empty})")
  return files, labels


def folder_fingerprint(root: str) -> str:
  """16 hex digits of a sha256 over every `<split>/<class>/<file>:<size>` line (sorted): cheap (stat only)."""
  h = hashlib.sha256()
  for split in sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))):
    for cls in sorted(os.listdir(os.path.join(root, split))):
      folder = os.path.join(root, split, cls)
      if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
          h.update(f"{split}/{cls}/{name}:{os.path.getsize(os.path.join(folder, name))}\n".encode())
  return h.hexdigest()[:16]


def describe(root: str) -> str:
  """The name results give the images in `root`: the "description" of its dataset.json, else a known copy
  recognised by its content (`KNOWN_COPIES`, for read-only folders that cannot hold a dataset.json), else
  its path."""
  meta = os.path.join(root, METADATA_FILE)
  if os.path.isfile(meta):
    with open(meta) as f:
      return json.load(f)["description"]
  return KNOWN_COPIES.get(folder_fingerprint(root), f"CIFAR-10 (image folder {root})")
