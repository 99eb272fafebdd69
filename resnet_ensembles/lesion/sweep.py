"""Lesion studies (Veit et al. Figs. 3-5): evaluate a trained network under many deletions/reorderings.

Two engines, both running the one model definition through its traced `block_mask`/`block_order`
inputs or its block-by-block methods:

* `evaluate` vmaps the network over a stack of masks and/or orders: one compiled program, the mask
  stack cut into chunks that fit a memory budget and sharded over the devices of the `data` mesh,
  the test split streamed in fixed-size (padded) batches. BatchNorm uses the stored statistics (the
  paper) or re-estimates them for each lesioned network on a few training batches (`batchnorm`): from
  its first changed position on (bn="recalibrate"; the intact network stays the deployed one), or all.
* `single_deletion_sweep` (`wavefront`, re-exported here) exploits that the network without
  block i equals the full network before block i: a wavefront carries the full stream plus one stream
  per earlier deletion, so the n single deletions cost n(n+1)/2 block evaluations instead of n^2; with
  recalibrated statistics each stream runs with its own (`recalibrated_stack`). Images are sharded over devices.

Results are per-network top-1 errors (top-5 too above 10 classes) and per-class accuracies.
"""
from __future__ import annotations

from typing import Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion import masks as masks_lib
from resnet_ensembles.lesion.batchnorm import recalibrated_stats, recalibrated_stats_stack  # noqa: F401 (re-export)
from resnet_ensembles.lesion import progress as progress_lib
from resnet_ensembles.lesion.summary import RECAL_SCOPES
from resnet_ensembles import models
from resnet_ensembles.models.layout import check_block_order
from resnet_ensembles.lesion.common import (DEFAULT_BUDGET, Progress, activation_bytes, balanced_batch, batches,
                                            cached, check_scale, counts, shard, summary)
from resnet_ensembles.lesion.wavefront import single_deletion_sweep, wavefront_logits  # noqa: F401 (re-export)
from resnet_ensembles.parallel.mesh import data_mesh
from resnet_ensembles.store import checkpoints

# stored: as trained and deployed (the paper); recalibrate: statistics re-estimated per lesion from its first
# changed position on (the intact network stays the deployed one); recalibrate_all: every statistic
# re-estimated, which shifts the intact network too (kept to measure that shift and for sweeps made so)
BN_MODES = ("stored", "recalibrate", "recalibrate_all")
RECAL_MODES = ("recalibrate", "recalibrate_all")
RECAL_SCOPE = RECAL_SCOPES["recalibrate"]   # what bn="recalibrate" re-estimates, recorded with its results


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
  if bn in RECAL_MODES:
    models.require_batch_norm(model, f"bn={bn!r} (BatchNorm recalibration)")
  if bn in RECAL_MODES and recal_split is None:
    raise ValueError(f"bn={bn!r} needs recal_split (training images)")
  if len(split[1]) == 0:
    raise ValueError("the evaluation split is empty")
  return masks, orders


def _over_stack(fn, stack, vectorize: bool):
  """fn over the leading axis of `stack`: vmapped for masks; a sequential lax.map for orders, whose
  per-network convolution weights XLA would otherwise lower to grouped convolutions (3-4x slower on CPU)."""
  return jax.vmap(fn)(stack) if vectorize else jax.lax.map(fn, stack)


def masks_per_chunk(model, batch_size: int, memory_budget: int, num_devices: int, total: int,
                    image_hw: tuple[int, int] = (32, 32)) -> int:
  """How many networks run at once: at most what fits `memory_budget` bytes of activations (but at
  least one per device), a multiple of the device count, balanced so that padding the stack wastes little."""
  fit = max(1, memory_budget // max(1, activation_bytes(model, image_hw=image_hw) * batch_size))
  return balanced_batch(fit, total, num_devices)


@cached
def _evaluate_fns(model, mesh, recal: bool, downstream: bool = True):
  """(counts, recalibrate) programs of `evaluate`."""
  num_classes = model.num_classes

  def stack_counts(params, stats, m, o, scale, x, y, w):
    x = data_lib.normalize_for(model, x)

    def net(a):
      s, m, o = a
      # A branch's test-time scale belongs to its block (its variables), wherever an order moves it.
      logits = model.apply({"params": params, "batch_stats": stats if s is None else s}, x,
                           block_mask=m * (scale if o is None else scale[o]), block_order=o)
      return counts(logits, y, w, num_classes)
    return _over_stack(net, (stats if recal else None, m, o), vectorize=o is None)

  count_fn = shard(stack_counts, mesh,
                   (P(), P("data") if recal else P(), P("data"), P("data"), P(), P(), P(), P()), P("data"))
  # each lesion's statistics (the first changed position from the unscaled mask: a branch scale is how the
  # network is deployed, not a lesion); the deployed prefix's pass over each batch is shared by the stack
  recal_fn = shard(lambda v, m, o, scale, r: recalibrated_stats_stack(model, v, m, o, r, scale, downstream,
                                                                      vectorize=o is None),
                   mesh, (P(), P("data"), P("data"), P(), P()), P("data"))
  return count_fn, recal_fn


def recalibrated_stack(model, variables: dict, masks: np.ndarray, recal_split: data_lib.Split, *,
                       bn: str = "recalibrate", recal_batches: int = 4, recal_batch_size: int = 128, seed: int = 0,
                       branch_scale: Optional[np.ndarray] = None, memory_budget: int = DEFAULT_BUDGET,
                       mesh=None) -> dict:
  """The BatchNorm statistics `evaluate(bn=...)` gives each network of a mask stack [M, n] (same training
  images, same scope), stacked on a leading axis M: e.g. for the prefix-shared single-deletion sweep."""
  if bn not in RECAL_MODES:
    raise ValueError(f"bn must be one of {RECAL_MODES}, got {bn!r}")
  masks = masks_lib.check_mask(masks, model.layout)
  models.require_batch_norm(model, f"bn={bn!r} (BatchNorm recalibration)")
  scale = (np.ones(masks.shape[1], np.float32) if branch_scale is None
           else check_scale(branch_scale, masks.shape[1]))
  mesh = mesh if mesh is not None else data_mesh()
  total = len(masks)
  chunk = masks_per_chunk(model, recal_batch_size, memory_budget, mesh.size, total)
  padded = -(-total // chunk) * chunk
  masks = np.concatenate([masks, np.ones((padded - total, masks.shape[1]), np.float32)])
  _, recal_fn = _evaluate_fns(model, mesh, True, bn == "recalibrate")
  rx = _recal_images(recal_split, recal_batches, recal_batch_size, seed)
  parts = [jax.device_get(recal_fn(variables, masks[i:i + chunk], None, scale, rx)) for i in range(0, padded, chunk)]
  return jax.tree.map(lambda *a: np.concatenate(a)[:total], *parts)


def _recal_images(recal_split: data_lib.Split, recal_batches: int, recal_batch_size: int, seed: int) -> np.ndarray:
  """The seeded training images every recalibration of a sweep uses, [K, B, H, W, 3]."""
  rx, _ = data_lib.subset(recal_split, recal_batches * recal_batch_size, seed)
  if len(rx) < recal_batches * recal_batch_size:
    raise ValueError(f"recal_split has {len(rx)} images, fewer than {recal_batches} x {recal_batch_size}")
  return rx.reshape((recal_batches, recal_batch_size) + rx.shape[1:])


def evaluate(model, variables: dict, split: data_lib.Split, masks: Optional[np.ndarray] = None,
             orders: Optional[np.ndarray] = None, *, bn: str = "stored", batch_size: int = 500,
             memory_budget: int = DEFAULT_BUDGET, mesh=None, recal_split: Optional[data_lib.Split] = None,
             recal_batches: int = 4, recal_batch_size: int = 128, seed: int = 0,
             branch_scale: Optional[np.ndarray] = None, resume_dir: Optional[str] = None,
             resume_key: Optional[dict] = None) -> dict:
  """Errors of every network in a stack of masks [M, n] and/or within-stage orders [M, n].

  Returns {"error": [M], "class_accuracy": [M, C], ("top5_error": [M] above 10 classes)}. The stack is
  chunked to `memory_budget` and sharded over `mesh` (default: all devices); the answer does not depend
  on the chunking. bn="recalibrate" re-estimates each network's BatchNorm statistics from its first changed
  position on (`batchnorm`; "recalibrate_all": all of them) on `recal_batches` batches of `recal_batch_size`
  images drawn (seeded) from `recal_split` before evaluating it.
  `branch_scale` [n] scales the kept branches as the network is used at test time (stochastic depth's
  p_l): the branch at position i runs with mask[i] x branch_scale[block at i] (order[i], or i).

  `resume_dir`: a folder (`progress.partial_dir`) where each finished chunk is written as it finishes, under
  a key of everything the numbers and the chunking depend on (network fingerprint, stack, test images, bn,
  batch and chunk sizes, branch scale, recalibration; plus `resume_key`, e.g. the sweep's settings); a rerun
  with the same key evaluates only the chunks not there yet and returns what an uninterrupted run returns.
  The caller removes the folder (`progress.discard`) once it has written the result."""
  masks, orders = _check(model, split, masks, orders, bn, recal_split)
  scale = (np.ones(masks.shape[1], np.float32) if branch_scale is None
           else check_scale(branch_scale, masks.shape[1]))
  mesh = mesh if mesh is not None else data_mesh()
  total, num_classes, labels = len(masks), model.num_classes, np.asarray(split[1])
  batch_size = balanced_batch(batch_size, len(labels))
  recal = bn in RECAL_MODES
  chunk = masks_per_chunk(model, max(batch_size, recal_batch_size if recal else 0),
                          memory_budget, mesh.size, total, image_hw=tuple(np.shape(split[0])[1:3]))
  padded = -(-total // chunk) * chunk  # pad with full networks so every chunk has the same shape
  masks = np.concatenate([masks, np.ones((padded - total, masks.shape[1]), np.float32)])
  if orders is not None:
    orders = np.concatenate([orders, np.tile(np.arange(masks.shape[1], dtype=np.int32), (padded - total, 1))])
  count_fn, recal_fn = _evaluate_fns(model, mesh, recal, bn == "recalibrate")
  if recal:
    rx = _recal_images(recal_split, recal_batches, recal_batch_size, seed)
  test_batches = [jax.device_put(b) for b in batches((split[0], labels), batch_size)]
  correct, top5 = np.zeros((padded, num_classes)), np.zeros(padded)
  num_chunks = padded // chunk
  done = np.zeros(num_chunks, bool)
  store = None
  if resume_dir is not None:
    key = dict(resume_key or {}, model=type(model).__name__, num_classes=num_classes,
               variables_sha256=checkpoints.fingerprint(variables),
               stack_sha256=progress_lib.digest(masks[:total], None if orders is None else orders[:total]),
               test_sha256=progress_lib.digest(split[0], labels), bn=bn, batch_size=batch_size, chunk=chunk,
               branch_scale=scale.tolist(),
               recal=[recal_batches, recal_batch_size, seed, progress_lib.digest(*recal_split)] if recal else None)
    if bn == "recalibrate":  # chunks from before the downstream scope (same name, all re-estimated) don't match
      key["recal_scope"] = RECAL_SCOPE
    store = progress_lib.ChunkStore(resume_dir, key, num_chunks, writer=jax.process_index() == 0)
    for i, (c, t) in store.load().items():
      correct[i * chunk:(i + 1) * chunk], top5[i * chunk:(i + 1) * chunk], done[i] = c, t, True
    if jax.process_count() > 1:  # process 0 holds the store: every process skips the same chunks
      done, correct, top5 = multihost_utils.broadcast_one_to_all((done, correct, top5))
      done, correct, top5 = np.asarray(done, bool), np.asarray(correct), np.asarray(top5)
    if done.any():
      logging.info("lesion sweep: resuming at chunk %d/%d (%d of %d chunks already in %s)",
                   int(np.argmin(done)) + 1 if not done.all() else num_chunks, num_chunks, int(done.sum()),
                   num_chunks, resume_dir)
  todo = [i for i in range(num_chunks) if not done[i]]
  progress = Progress(f"lesion sweep ({bn} BN)", len(todo) * chunk * len(labels))
  for n_done, i in enumerate(todo, 1):
    start = i * chunk
    m = masks[start:start + chunk]
    o = None if orders is None else orders[start:start + chunk]
    stats = recal_fn(variables, m, o, scale, rx) if recal else variables.get("batch_stats", {})
    acc = None
    for x, y, w in test_batches:
      out = count_fn(variables["params"], stats, m, o, scale, x, y, w)
      acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
    # allgather: on several processes the mask axis is spread over devices no one process holds
    correct[start:start + chunk], top5[start:start + chunk] = multihost_utils.process_allgather(acc, tiled=True)
    if store is not None:
      store.save(i, correct[start:start + chunk], top5[start:start + chunk])
    progress.update(n_done * chunk * len(labels), force=n_done == len(todo))
  return summary(correct[:total], top5[:total], labels, num_classes)
