"""What both lesion engines share (lesion.py's vmapped sweep, lesion_wavefront.py's prefix-shared one):
padded fixed-size batches, per-network hit counts and their summary, batch sizing against a memory
budget, progress lines, and shard_map programs cached per (model, mesh)."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from resnet_ensembles.utils import logs

LIVE_ACTIVATIONS = 6       # rough number of block-sized tensors alive at once in a forward pass
DEFAULT_BUDGET = 512 << 20


def activation_bytes(model, num_streams: int = 1, image_hw: tuple[int, int] = (32, 32)) -> int:
  """Rough peak activation bytes of one `image_hw` image through `num_streams` copies of the network:
  a few tensors of the size of the stream entering block 0 (`model.stream_shape`: after the stem)."""
  itemsize = jnp.dtype(model.dtype).itemsize
  first = int(np.prod(model.stream_shape(tuple(image_hw))))
  return LIVE_ACTIVATIONS * num_streams * first * max(itemsize, 4)


def counts(logits, y, w, num_classes: int):
  """(correct per class [C], top-5 hits) of one network on one batch; weights drop padding."""
  hit = (jnp.argmax(logits, -1) == y).astype(jnp.float32) * w
  top5 = 0.0
  if num_classes > 10:
    top5 = jnp.sum(jnp.any(jax.lax.top_k(logits, 5)[1] == y[:, None], -1) * w)
  return jax.ops.segment_sum(hit, y, num_classes), top5


def summary(correct: np.ndarray, top5: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  per_class = np.bincount(labels, minlength=num_classes).astype(np.float64)
  correct, top5 = np.asarray(correct, np.float64), np.asarray(top5, np.float64)
  out = {"error": 1.0 - correct.sum(-1) / len(labels),
         "class_accuracy": correct / np.where(per_class > 0, per_class, np.nan)}
  if num_classes > 10:
    out["top5_error"] = 1.0 - top5 / len(labels)
  return out


def balanced_batch(limit: int, total: int, multiple: int = 1) -> int:
  """A batch size (a multiple of `multiple`, at most `limit` unless that is below `multiple`) that
  covers `total` items with the least padding, then the fewest batches: padding is wasted work."""
  limit = max(multiple, min(limit, -(-total // multiple) * multiple))
  sizes = range(multiple, limit // multiple * multiple + 1, multiple)
  return min(sizes, key=lambda b: (-(-total // b) * b, -(-total // b)))


def batches(split, batch_size: int):
  """Fixed-size batches (the last zero-padded, weight 0 per example) so one program serves every batch: uint8
  images [N, H, W, 3] with labels [N], or token windows [N, T] with their next tokens [N, T]."""
  images, labels = split
  pad_rows = lambda a, pad: np.pad(a, ((0, pad),) + ((0, 0),) * (np.ndim(a) - 1))
  for start in range(0, len(labels), batch_size):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    pad = batch_size - len(y)
    yield pad_rows(x, pad), pad_rows(y, pad), np.pad(np.ones(len(y), np.float32), (0, pad))


class Progress:
  """A log line every `every_s` seconds: network-images done, rate and ETA."""

  def __init__(self, what: str, total: int, every_s: float = 20.0):
    self.what, self.total, self.every_s, self.t0, self.last = what, total, every_s, time.time(), time.time()

  def update(self, done: int, force: bool = False) -> None:
    now = time.time()
    if (now - self.last < self.every_s and not force) or done == 0:
      return
    self.last, rate = now, done / max(now - self.t0, 1e-9)
    logging.info("%s: %d/%d network-images  %.0f/s  ETA %s", self.what, done, self.total, rate,
                 logs.duration((self.total - done) / max(rate, 1e-9)))


def shard(f, mesh, in_specs, out_specs):
  """jit(shard_map(f)) over `mesh`."""
  return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False))


def cached(build):
  """Programs cached per (model, mesh devices, flags) so repeated sweeps of one network compile once."""
  cache = {}

  def get(model, mesh, *args):
    key = (model, tuple(d.id for d in mesh.devices.flat), mesh.axis_names) + args
    if key not in cache:
      cache[key] = build(model, mesh, *args)
    return cache[key]
  return get


def check_scale(branch_scale, num_blocks: int) -> np.ndarray:
  """Test-time branch scales [n] in (0, 1] (stochastic depth's p_l), or a clear ValueError."""
  scale = np.asarray(branch_scale, np.float32)
  if scale.shape != (num_blocks,) or not np.all((scale > 0) & (scale <= 1)):
    raise ValueError(f"branch_scale must be {num_blocks} values in (0, 1], got shape {scale.shape}")
  return scale
