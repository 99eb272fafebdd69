"""ImageNet input pipeline: JPEG decoding and augmentation on each host with tf.data, one share per process.

ImageNet does not fit in host memory as CIFAR-10 does, so every process streams only its own part of a split
(TFDS `split_for_jax_process`, or every P-th file of a folder) and yields per-process uint8 batches that
`sharding.global_batch` assembles into the global batch (local batch = global batch / process count; with
`sharding.data_mesh` process p holds rows [p * local, (p + 1) * local)). Normalisation happens on device.

Preprocessing (`imagenet_preprocess`: Inception-style random-resized crop and flip for training, a central
crop for evaluation) is stateless, seeded here by (seed, process, element index), so a pipeline is
reproducible. Both sources share it. TensorFlow is imported lazily: the models and configs never need it.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np

from resnet_ensembles.data.imagenet_preprocess import preprocess_eval, preprocess_train, tf_module

MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32) * 255
STDDEV_RGB = np.array([0.229, 0.224, 0.225], np.float32) * 255
SOURCES = ("tfds", "folder")
_SUFFIXES = (".jpg", ".jpeg", ".png")


def normalize(images: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  """uint8 [..., 3] -> per-channel standardised (on device)."""
  return ((images.astype(jnp.float32) - MEAN_RGB) / STDDEV_RGB).astype(dtype)


def folder_files(root: str, split: str) -> tuple[list[str], np.ndarray, list[str]]:
  """(files, labels, class names) of `<root>/<split>/<class>/*.jpg|jpeg|png`, classes sorted by name.

  A missing split folder, a split without images or a class folder without images (a half-copied split:
  its label would silently never be trained) is a one-line error naming the folder, before anything
  compiles. The files are not opened here: 1.28M JPEGs are decoded only in tf.data, as batches are drawn.
  A corrupt one surfaces there as tf.errors.InvalidArgumentError ("Unknown image file format" for garbage,
  "Invalid JPEG data, size N" for a truncated JPEG; checked with TF 2.21), which does not name the file and
  ends the run with a traceback at that batch; the last checkpoint is kept (docs/what_survives_what.md)."""
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(f"image folder split not found: {split_dir} (expected <root>/{split}/<class>/*.JPEG)")
  classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
  files, labels, empty = [], [], []
  for label, name in enumerate(classes):
    names = sorted(f for f in os.listdir(os.path.join(split_dir, name)) if f.lower().endswith(_SUFFIXES))
    files += [os.path.join(split_dir, name, f) for f in names]
    labels += [label] * len(names)
    empty += [] if names else [name]
  if not files:
    raise ValueError(f"{split_dir} holds no .jpg/.jpeg/.png images in class folders")
  if empty:
    raise ValueError(f"{os.path.join(split_dir, empty[0])}: no .jpg/.jpeg/.png images "
                     f"({len(empty)} empty class folder(s) of {len(classes)})")
  return files, np.asarray(labels, np.int32), classes


def _tfds_builder(data):
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError("ImageNet from TFDS needs tensorflow-datasets; or set config.data.source='folder'") from e
  builder = tfds.builder("imagenet2012", data_dir=data.tfds_data_dir or None)
  if not builder.is_prepared():
    if not data.manual_dir:
      raise RuntimeError(f"TFDS imagenet2012 is not prepared in {builder.data_dir}; set config.data.manual_dir "
                         "to the folder holding ILSVRC2012_img_{train,val}.tar (or use source='folder')")
    tf_module()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=data.manual_dir))
  return tfds, builder


def _source(data, split: str, process_index: int, process_count: int, shuffle_files: bool, seed: int):
  """(dataset of (image bytes, label) holding this process's share, size of the whole split)."""
  tf = tf_module()
  if data.source not in SOURCES:
    raise ValueError(f"config.data.source must be one of {SOURCES}, got {data.source!r}")
  if data.source == "folder":
    if not data.folder:
      raise ValueError("config.data.source='folder' needs config.data.folder=<root>/<split>/<class>/*.JPEG")
    files, labels, _ = folder_files(data.folder, split)
    ds = tf.data.Dataset.from_tensor_slices((files[process_index::process_count],
                                             labels[process_index::process_count]))
    if shuffle_files:  # the list is sorted by class: reshuffle the names (cheap) every pass
      ds = ds.shuffle(len(files) // process_count + 1, seed=seed, reshuffle_each_iteration=True)
    return ds.map(lambda f, y: (tf.io.read_file(f), y), num_parallel_calls=tf.data.AUTOTUNE), len(files)
  tfds, builder = _tfds_builder(data)
  ds = builder.as_dataset(
      split=tfds.split_for_jax_process(split, process_index=process_index, process_count=process_count),
      decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=shuffle_files,
      read_config=tfds.ReadConfig(shuffle_seed=seed))
  return ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32))), builder.info.splits[split].num_examples


def _process(process_index: Optional[int], process_count: Optional[int]) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f"process_index must be in [0, {count}), got {index}")
  return index, count


def train_batches(data, split: str, local_batch_size: int, *, seed: int = 0, image_size: int = 224,
                  shuffle_buffer: int = 16_384, process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> Iterator[dict]:
  """Endless shuffled, augmented {"image": uint8 [B, S, S, 3], "label": int32 [B]} of this process."""
  tf = tf_module()
  index, count = _process(process_index, process_count)
  ds, _ = _source(data, split, index, count, shuffle_files=True, seed=seed + index)
  ds = ds.repeat().shuffle(shuffle_buffer, seed=seed + 7919 * index).enumerate()
  base = tf.constant(seed * 1024 + index, tf.int64)
  ds = ds.map(lambda i, xy: {"image": preprocess_train(xy[0], tf.stack([base, i]), image_size), "label": xy[1]},
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  yield from ds.batch(local_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def eval_batches(data, split: str, local_batch_size: int, *, image_size: int = 224,
                 process_index: Optional[int] = None, process_count: Optional[int] = None) -> Iterator[dict]:
  """One pass over this process's share, {"image", "label", "weight"} in batches of exactly
  `local_batch_size`; padding rows weigh 0 and every process yields the same number of batches."""
  tf = tf_module()
  index, count = _process(process_index, process_count)
  ds, total = _source(data, split, index, count, shuffle_files=False, seed=0)
  num_batches = -(-(-(-total // count)) // local_batch_size)
  ds = ds.map(lambda b, y: {"image": preprocess_eval(b, image_size), "label": y, "weight": tf.constant(1.0)},
              num_parallel_calls=tf.data.AUTOTUNE)
  pad = tf.data.Dataset.from_tensors({"image": tf.zeros([image_size, image_size, 3], tf.uint8),
                                      "label": tf.constant(0, tf.int32), "weight": tf.constant(0.0)}).repeat()
  ds = ds.concatenate(pad).batch(local_batch_size).take(num_batches)
  yield from ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def num_examples(data, split: str) -> int:
  """Size of a whole split (all processes)."""
  if data.source == "folder":
    return len(folder_files(data.folder, split)[0])
  return _tfds_builder(data)[1].info.splits[split].num_examples


def load_arrays(data, split: str, size: int = 0, *, image_size: int = 224, shuffle: bool = False,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """`size` images of a split (all of it for size <= 0) as host arrays, centre-cropped as in evaluation: the
  input of the lesion and path engines, which hold their images in memory. `shuffle` draws them from the
  whole split with a fixed seed (training images for BatchNorm recalibration and path sampling); otherwise
  they are the split's first images in file order. Every process loads the same images."""
  tf = tf_module()
  ds, total = _source(data, split, 0, 1, shuffle_files=shuffle, seed=seed)
  n = total if size <= 0 else min(size, total)
  if shuffle:
    ds = ds.shuffle(min(total, 16_384), seed=seed)
  ds = ds.take(n).map(lambda b, y: (preprocess_eval(b, image_size), y), num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=True)
  images, labels = np.zeros((n, image_size, image_size, 3), np.uint8), np.zeros((n,), np.int32)
  i = 0
  for x, y in ds.batch(256).prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
    images[i:i + len(y)], labels[i:i + len(y)] = x, y
    i += len(y)
  return images[:i], labels[:i]
