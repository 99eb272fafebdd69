"""CIFAR-10 from TFDS or an image folder, decoded once into uint8 arrays, augmented on device.

Sources (`resolve_source`): an explicit folder (config field or the CIFAR10_DIR environment variable)
wins; otherwise TFDS `cifar10` (prepared data, else download). TensorFlow is imported only on the TFDS
path, so a machine with JAX alone can train from a folder copy. The folder may also be one packed file
(`*.cifarpack`, or any regular file; written by experiments/pack_cifar10.py, read by data/pack.py).
"""
from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import os
import tempfile
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from resnet_ensembles.data.folder import CIFAR10_CLASSES, cache_dir_or_default, decode_checked, list_split

# Per-channel statistics of the CIFAR-10 training set on the 0..255 scale (as in fb.resnet.torch).
MEAN = np.array([125.3, 123.0, 113.9], np.float32)
STD = np.array([63.0, 62.1, 66.7], np.float32)

Split = tuple[np.ndarray, np.ndarray]  # images uint8 [N, 32, 32, 3], labels int32 [N]


def resolve_source(source: str = "auto", folder: Optional[str] = None) -> tuple[str, Optional[str]]:
  """Returns ("folder", path) or ("tfds", None) following the documented precedence."""
  folder = folder or os.environ.get("CIFAR10_DIR") or None
  if source not in ("auto", "folder", "tfds"):
    raise ValueError(f"data source must be 'auto', 'folder' or 'tfds', got {source!r}")
  if source == "folder" and not folder:
    raise ValueError("data source 'folder' needs config.data.folder or CIFAR10_DIR=<root with train/ and test/>")
  if source == "tfds" or (source == "auto" and not folder):
    return "tfds", None
  return "folder", folder


def load_cifar10(source: str = "auto", folder: Optional[str] = None,
                 cache_dir: Optional[str] = None) -> dict[str, Split]:
  """Both splits as uint8 arrays: {"train": (x, y), "test": (x, y)}."""
  kind, path = resolve_source(source, folder)
  if kind == "folder":
    from resnet_ensembles.data import pack as cifar_pack
    if cifar_pack.is_pack(path):
      return cifar_pack.load_pack(path, cache_dir)
    return {split: load_folder_split(path, split, cache_dir) for split in ("train", "test")}
  return {split: _load_tfds_split(split) for split in ("train", "test")}


def _cache_path(root: str, split: str, files: list[str], cache_dir: Optional[str]) -> str:
  """Keyed by the folder's real path (a symlink to a copy, e.g. from another checkout, shares its cache) and
  its file list."""
  digest = hashlib.sha1("\n".join([os.path.realpath(root)] + files).encode()).hexdigest()[:16]
  return os.path.join(cache_dir_or_default(cache_dir), f"cifar10_{split}_{digest}.npz")


def _decode(path: str) -> np.ndarray:
  """One image file -> uint8 [32, 32, 3]; an unreadable or wrongly sized file is one line naming it."""
  return decode_checked(path, path)


def load_folder_split(root: str, split: str, cache_dir: Optional[str] = None) -> Split:
  """Reads `<root>/<split>/<class>/*.jpg|png`, caching the decoded arrays as an .npz. A missing split or
  class folder, an empty one, an unreadable image or one not 32x32 is a one-line error naming it, raised
  before anything is cached (the listing and its checks are `data.folder`'s, shared with the packer)."""
  split_dir = os.path.join(root, split)
  files, labels = list_split(root, split)
  cache = _cache_path(root, split, files, cache_dir)
  if os.path.exists(cache):
    with np.load(cache) as z:
      return z["images"], z["labels"]
  # Processes started together (several mains, test workers) decode a split once: the others wait here for
  # the first one's cache instead of each decoding the same files on the same cores. The lock lives in the
  # temporary folder, so the cache folder holds caches only (and nothing at all after a bad image).
  lock_path = os.path.join(tempfile.gettempdir(), "resnet_ensembles_" + os.path.basename(cache) + ".lock")
  with open(lock_path, "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.path.exists(cache):
      with np.load(cache) as z:
        return z["images"], z["labels"]
    pool = concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1))
    try:  # the first bad file's error, in file order; the files not yet decoded are not waited for
      images = np.stack(list(pool.map(_decode, [os.path.join(split_dir, f) for f in files])))
    finally:
      pool.shutdown(wait=True, cancel_futures=True)
    labels = np.asarray(labels, np.int32)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    tmp = cache + f".tmp{os.getpid()}.npz"
    np.savez(tmp, images=images, labels=labels)
    os.replace(tmp, cache)
  return images, labels


def _load_tfds_split(split: str) -> Split:
  try:
    import tensorflow_datasets as tfds  # lazy: only the TFDS path needs TensorFlow
  except ImportError as e:
    raise ImportError("TFDS is not installed; install tensorflow-datasets or set CIFAR10_DIR "
                      "(or config.data.folder) to a local <root>/<split>/<class>/*.jpg copy") from e
  try:
    ds = tfds.load("cifar10", split=split, batch_size=-1, as_supervised=True)
  except Exception as e:  # no prepared data and no network
    raise RuntimeError(f"TFDS could not load cifar10 ({type(e).__name__}: {str(e)[:200]}); set CIFAR10_DIR "
                       "or config.data.folder to a local copy laid out <root>/<split>/<class>/*.jpg") from e
  images, labels = tfds.as_numpy(ds)
  return images.astype(np.uint8), labels.astype(np.int32)


def normalize(images: jax.Array) -> jax.Array:
  """uint8 [..., 32, 32, 3] -> float32, per-channel standardised."""
  return (images.astype(jnp.float32) - MEAN) / STD


def standardize(images: jax.Array, stats: str = "cifar10") -> jax.Array:
  """uint8 images standardised with CIFAR-10 ("cifar10") or ImageNet ("imagenet") channel statistics."""
  if stats == "imagenet":
    from resnet_ensembles.data import imagenet as imagenet_data
    return imagenet_data.normalize(images)
  return normalize(images)


def normalize_for(model, images: jax.Array) -> jax.Array:
  """`images` (uint8) standardised as `model` was trained: CIFAR-10 or ImageNet channel statistics."""
  return standardize(images, getattr(model, "input_stats", "cifar10"))


def augment(key: jax.Array, images: jax.Array, pad: int = 4, stats: str = "cifar10") -> jax.Array:
  """The paper's augmentation on device: 4-pixel zero pad (after normalisation, as in the authors'
  code), random 32x32 crop, random horizontal flip. Returns float32 images standardised with `stats`
  ("cifar10", or "imagenet" for networks trained with ImageNet channel statistics)."""
  x = standardize(images, stats)
  n, h, w, _ = x.shape
  k_crop, k_flip = jax.random.split(key)
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * pad + 1)
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
  x = jax.vmap(crop)(x, offsets)
  flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
  return jnp.where(flip, x[:, :, ::-1, :], x)


def subset(split: Split, size: int, seed: int = 0) -> Split:
  """A class-balanced-in-expectation random subset of `size` examples (all when size <= 0)."""
  images, labels = split
  if size <= 0 or size >= len(labels):
    return images, labels
  idx = np.sort(np.random.default_rng(seed).permutation(len(labels))[:size])
  return images[idx], labels[idx]


def describe(data: dict[str, Split]) -> str:
  return ", ".join(f"{k}: {v[0].shape[0]} images" for k, v in data.items())

