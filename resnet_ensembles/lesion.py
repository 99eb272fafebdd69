"""Lesion studies (Veit et al. Figs. 3-5): evaluate a trained network under many deletions/reorderings.

Two engines, both running the one model definition through its traced `block_mask`/`block_order`
inputs or its block-by-block methods:

* `evaluate` vmaps the network over a stack of masks and/or orders: one compiled program, the mask
  stack cut into chunks that fit a memory budget and sharded over the devices of the `data` mesh,
  the test split streamed in fixed-size (padded) batches. BatchNorm uses the stored statistics (the
  paper) or re-estimates them for each lesioned network on a few training batches.
* `single_deletion_sweep` exploits that the network without block i equals the full network before
  block i: a wavefront carries the full stream plus one stream per earlier deletion, so the n single
  deletions cost n(n+1)/2 block evaluations instead of n^2. Images are sharded over devices.

Results are per-network top-1 errors (top-5 too above 10 classes) and per-class accuracies.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import PartitionSpec as P

from resnet_ensembles import data as data_lib, masks as masks_lib, models
from resnet_ensembles.layout import Layout, check_block_order
from resnet_ensembles.sharding import data_mesh

BN_MODES = ("stored", "recalibrate")
BN_MOMENTUM = 0.9          # models.py BatchNorm: new = 0.9 * old + 0.1 * batch
LIVE_ACTIVATIONS = 6       # rough number of block-sized tensors alive at once in a forward pass
DEFAULT_BUDGET = 512 << 20


def activation_bytes(model, num_streams: int = 1) -> int:
  """Rough peak activation bytes of one image through `num_streams` copies of the network."""
  itemsize = jnp.dtype(model.dtype).itemsize
  return LIVE_ACTIVATIONS * num_streams * 32 * 32 * model.width * max(itemsize, 4)


def permute_blocks(tree: dict, order: Any, layout: Layout) -> dict:
  """tree["block_pos"] <- tree["block_{order[pos]}"] (params or statistics; `order` may be traced)."""
  out = dict(tree)
  for s in range(layout.num_stages):
    members = [i for i in layout.stage_blocks(s) if i not in layout.stage_openers]
    if not members:
      continue
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[tree[f"block_{i:02d}"] for i in members])
    for pos in members:
      out[f"block_{pos:02d}"] = jax.tree.map(lambda a, pos=pos: a[order[pos] - members[0]], stacked)
  return out


def recalibrated_stats(model, variables: dict, mask: Any, order: Any, images: Any) -> dict:
  """BatchNorm statistics of one lesioned network: the average over `images` [K, B, 32, 32, 3] (uint8)
  of each batch's statistics in training mode; blocks with mask 0 keep their stored statistics."""
  lay, params, stored = model.layout, variables["params"], variables["batch_stats"]
  if order is not None:  # train-mode BN cannot take block_order: move the blocks' variables instead
    params, stored = permute_blocks(params, order, lay), permute_blocks(stored, order, lay)
  zeros = jax.tree.map(jnp.zeros_like, stored)

  def add_batch(total, x):  # with zero running stats, the update returns 0.1 * batch statistics
    _, new = model.apply({"params": params, "batch_stats": zeros}, data_lib.normalize_for(model, x),
                         train=True, block_mask=mask, mutable=["batch_stats"])
    return jax.tree.map(jnp.add, total, new["batch_stats"]), None

  total, _ = jax.lax.scan(add_batch, zeros, images)
  avg = jax.tree.map(lambda t: t / (images.shape[0] * (1 - BN_MOMENTUM)), total)
  stats = avg if mask is None else models.keep_stats_of_inactive_blocks(stored, avg, mask)
  return stats if order is None else permute_blocks(stats, jnp.argsort(order), lay)


def _counts(logits, y, w, num_classes: int):
  """(correct per class [C], top-5 hits) of one network on one batch; weights drop padding."""
  hit = (jnp.argmax(logits, -1) == y).astype(jnp.float32) * w
  top5 = 0.0
  if num_classes > 10:
    top5 = jnp.sum(jnp.any(jax.lax.top_k(logits, 5)[1] == y[:, None], -1) * w)
  return jax.ops.segment_sum(hit, y, num_classes), top5


def _summary(correct: np.ndarray, top5: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
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


def _batches(split, batch_size: int):
  """Fixed-size uint8 batches (the last zero-padded, weight 0) so one program serves every batch."""
  images, labels = split
  for start in range(0, len(labels), batch_size):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    pad = batch_size - len(y)
    yield (np.pad(x, ((0, pad), (0, 0), (0, 0), (0, 0))), np.pad(y, (0, pad)),
           np.pad(np.ones(len(y), np.float32), (0, pad)))


class _Progress:
  def __init__(self, what: str, total: int, every_s: float = 20.0):
    self.what, self.total, self.every_s, self.t0, self.last = what, total, every_s, time.time(), time.time()

  def update(self, done: int, force: bool = False) -> None:
    now = time.time()
    if (now - self.last < self.every_s and not force) or done == 0:
      return
    self.last, rate = now, done / max(now - self.t0, 1e-9)
    logging.info("%s: %d/%d network-images  %.0f/s  ETA %s", self.what, done, self.total, rate,
                 time.strftime("%H:%M:%S", time.gmtime((self.total - done) / max(rate, 1e-9))))


def _check(model, split, masks, orders, bn, recal_split):
  lay = model.layout
  if bn not in BN_MODES:
    raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
  if masks is None and orders is None:
    raise ValueError("give a stack of masks and/or orders")
  if masks is not None:
    masks = masks_lib.check_mask(masks, lay)
  if orders is not None:
    orders = np.asarray(orders, np.int32)
    orders = orders[None] if orders.ndim == 1 else orders
    for o in orders:
      check_block_order(o, lay)
    if masks is not None and len(masks) != len(orders):
      raise ValueError(f"{len(masks)} masks but {len(orders)} orders: give one of each per network")
  if masks is None:
    masks = np.ones((len(orders), lay.num_blocks), np.float32)
  if bn == "recalibrate" and recal_split is None:
    raise ValueError("bn='recalibrate' needs recal_split (training images)")
  if len(split[1]) == 0:
    raise ValueError("the evaluation split is empty")
  return masks, orders


def _over_stack(fn, stack, vectorize: bool):
  """fn over the leading axis of `stack`: vmapped for masks; a sequential lax.map for orders, whose
  per-network convolution weights XLA would otherwise lower to grouped convolutions (3-4x slower on CPU)."""
  return jax.vmap(fn)(stack) if vectorize else jax.lax.map(fn, stack)


def masks_per_chunk(model, batch_size: int, memory_budget: int, num_devices: int, total: int) -> int:
  """How many networks run at once: at most what fits `memory_budget` bytes of activations (but at
  least one per device), a multiple of the device count, balanced so that padding the stack wastes little."""
  fit = max(1, memory_budget // max(1, activation_bytes(model) * batch_size))
  return balanced_batch(fit, total, num_devices)


def _shard(f, mesh, in_specs, out_specs):
  return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False))


def _cached(build):
  """Programs cached per (model, mesh devices, flags) so repeated sweeps of one network compile once."""
  cache = {}

  def get(model, mesh, *args):
    key = (model, tuple(d.id for d in mesh.devices.flat), mesh.axis_names) + args
    if key not in cache:
      cache[key] = build(model, mesh, *args)
    return cache[key]
  return get


@_cached
def _evaluate_fns(model, mesh, recal: bool):
  """(counts, recalibrate) programs of `evaluate`."""
  num_classes = model.num_classes

  def counts(params, stats, m, o, x, y, w):
    x = data_lib.normalize_for(model, x)

    def net(a):
      s, m, o = a
      logits = model.apply({"params": params, "batch_stats": stats if s is None else s}, x, block_mask=m,
                           block_order=o)
      return _counts(logits, y, w, num_classes)
    return _over_stack(net, (stats if recal else None, m, o), vectorize=o is None)

  count_fn = _shard(counts, mesh, (P(), P("data") if recal else P(), P("data"), P("data"), P(), P(), P()),
                    P("data"))
  recal_fn = _shard(lambda v, m, o, r: _over_stack(lambda a: recalibrated_stats(model, v, a[0], a[1], r), (m, o),
                                                   vectorize=o is None),
                    mesh, (P(), P("data"), P("data"), P()), P("data"))
  return count_fn, recal_fn


def evaluate(model, variables: dict, split: data_lib.Split, masks: Optional[np.ndarray] = None,
             orders: Optional[np.ndarray] = None, *, bn: str = "stored", batch_size: int = 500,
             memory_budget: int = DEFAULT_BUDGET, mesh=None, recal_split: Optional[data_lib.Split] = None,
             recal_batches: int = 4, recal_batch_size: int = 128, seed: int = 0) -> dict:
  """Errors of every network in a stack of masks [M, n] and/or within-stage orders [M, n].

  Returns {"error": [M], "class_accuracy": [M, C], ("top5_error": [M] above 10 classes)}. The stack is
  chunked to `memory_budget` and sharded over `mesh` (default: all devices); the answer does not depend
  on the chunking. bn="recalibrate" re-estimates each network's BatchNorm statistics on `recal_batches`
  batches of `recal_batch_size` images drawn (seeded) from `recal_split` before evaluating it."""
  masks, orders = _check(model, split, masks, orders, bn, recal_split)
  mesh = mesh if mesh is not None else data_mesh()
  total, num_classes, labels = len(masks), model.num_classes, np.asarray(split[1])
  batch_size = balanced_batch(batch_size, len(labels))
  chunk = masks_per_chunk(model, max(batch_size, recal_batch_size if bn == "recalibrate" else 0),
                          memory_budget, mesh.size, total)
  padded = -(-total // chunk) * chunk  # pad with full networks so every chunk has the same shape
  masks = np.concatenate([masks, np.ones((padded - total, masks.shape[1]), np.float32)])
  if orders is not None:
    orders = np.concatenate([orders, np.tile(np.arange(masks.shape[1], dtype=np.int32), (padded - total, 1))])
  recal = bn == "recalibrate"
  count_fn, recal_fn = _evaluate_fns(model, mesh, recal)
  if recal:
    rx, _ = data_lib.subset(recal_split, recal_batches * recal_batch_size, seed)
    if len(rx) < recal_batches * recal_batch_size:
      raise ValueError(f"recal_split has {len(rx)} images, fewer than {recal_batches} x {recal_batch_size}")
    rx = rx.reshape((recal_batches, recal_batch_size) + rx.shape[1:])
  batches = [jax.device_put(b) for b in _batches((split[0], labels), batch_size)]
  correct, top5 = np.zeros((padded, num_classes)), np.zeros(padded)
  progress = _Progress(f"lesion sweep ({bn} BN)", total * len(labels))
  for start in range(0, padded, chunk):
    m = masks[start:start + chunk]
    o = None if orders is None else orders[start:start + chunk]
    stats = recal_fn(variables, m, o, rx) if recal else variables["batch_stats"]
    acc = None
    for x, y, w in batches:
      out = count_fn(variables["params"], stats, m, o, x, y, w)
      acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
    # allgather: on several processes the mask axis is spread over devices no one process holds
    correct[start:start + chunk], top5[start:start + chunk] = multihost_utils.process_allgather(acc, tiled=True)
    progress.update(min(start + chunk, total) * len(labels), force=start + chunk >= padded)
  return _summary(correct[:total], top5[:total], labels, num_classes)


def deleted_block_output(model, variables: dict, h: Any, pos: int) -> Any:
  """What `model.block(h, pos, mask=0)` returns, without running the branch it would zero."""
  return model.apply(variables, h, pos, method=model.deleted)


def wavefront_logits(model, variables: dict, x: Any) -> Any:
  """Logits [n + 1, B, C] of the full network (row 0) and of each single deletion (row 1 + i).

  At block t the stack holds the full stream and streams deleting blocks 0..t-1; all run block t in one
  batch, and the stream deleting t branches off the full stream: n(n+1)/2 block evaluations."""
  apply = lambda h, *a, **kw: model.apply(variables, h, *a, **kw)
  streams = apply(x, method=model.embed)[None]
  for t in range(model.layout.num_blocks):
    s, b = streams.shape[:2]
    new = deleted_block_output(model, variables, streams[0], t)
    out = apply(streams.reshape((s * b,) + streams.shape[2:]), t, method=model.block)
    streams = jnp.concatenate([out.reshape((s, b) + out.shape[1:]), new[None]])
  s, b = streams.shape[:2]
  return apply(streams.reshape((s * b,) + streams.shape[2:]), method=model.readout).reshape(s, b, -1)


@_cached
def _sweep_fn(model, mesh):
  def counts(v, x, y, w):
    logits = wavefront_logits(model, v, data_lib.normalize_for(model, x))
    out = jax.vmap(lambda l: _counts(l, y, w, model.num_classes))(logits)
    return jax.lax.psum(out, "data")
  return _shard(counts, mesh, (P(), P("data"), P("data"), P("data")), P())


def single_deletion_sweep(model, variables: dict, split: data_lib.Split, *, batch_size: int = 500,
                          memory_budget: int = DEFAULT_BUDGET, mesh=None) -> dict:
  """Every single deletion (stored BN) by the prefix-shared wavefront; equals `evaluate` on
  `masks.single_deletions(layout)`. Returns evaluate's keys for the n deletions plus "full_error" and
  "full_class_accuracy" of the unlesioned network; images are sharded over `mesh`."""
  mesh = mesh if mesh is not None else data_mesh()
  n, num_classes, labels = model.layout.num_blocks, model.num_classes, np.asarray(split[1])
  if len(labels) == 0:
    raise ValueError("the evaluation split is empty")
  fit = memory_budget // activation_bytes(model, num_streams=n + 1)
  batch_size = balanced_batch(min(batch_size, fit), len(labels), mesh.size)

  fn = _sweep_fn(model, mesh)
  progress = _Progress("prefix-shared single-deletion sweep", (n + 1) * len(labels))
  acc, done = None, 0
  for x, y, w in _batches((split[0], labels), batch_size):
    out = fn(variables, x, y, w)
    acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
    done = min(done + batch_size, len(labels))
    progress.update((n + 1) * done, force=done == len(labels))
  correct, top5 = multihost_utils.process_allgather(acc, tiled=True)
  full = _summary(correct[:1], np.asarray(top5)[:1], labels, num_classes)
  out = _summary(correct[1:], np.asarray(top5)[1:], labels, num_classes)
  out.update({f"full_{k}": v[0] for k, v in full.items()})
  return out
