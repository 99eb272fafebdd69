"""The prefix-shared single-deletion sweep (Veit et al. Fig. 3 without n full forward passes).

The network without block i equals the full network before block i, so a wavefront carries the full
stream plus one stream per earlier deletion: at block t every stream runs block t in one batch, and the
stream deleting t branches off the full stream. The n single deletions cost n(n+1)/2 block evaluations
instead of n^2, through the model's own `embed`/`block`/`deleted`/`readout` methods. Images are sharded
over the devices of the `data` mesh; the result equals `lesion.evaluate` on the single-deletion masks.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion import progress as progress_lib
from resnet_ensembles.lesion.common import (DEFAULT_BUDGET, Progress, activation_bytes, balanced_batch, batches,
                                            cached, check_scale as _check_scale, counts, shard, summary)
from resnet_ensembles.parallel.mesh import data_mesh
from resnet_ensembles.store import checkpoints


def deleted_block_output(model, variables: dict, h: Any, pos: int) -> Any:
  """What `model.block(h, pos, mask=0)` returns, without running the branch it would zero."""
  return model.apply(variables, h, pos, method=model.deleted)


def wavefront_logits(model, variables: dict, x: Any, branch_scale: Optional[Any] = None,
                     stream_stats: Optional[dict] = None) -> Any:
  """Logits [n + 1, B, C] of the full network (row 0) and of each single deletion (row 1 + i).

  At block t the stack holds the full stream and streams deleting blocks 0..t-1; all run block t in one
  batch, and the stream deleting t branches off the full stream: n(n+1)/2 block evaluations.
  `branch_scale` [n]: the kept branches' test-time scales (stochastic depth's p_l), else 1.
  `stream_stats`: BatchNorm statistics per stream, each leaf [n + 1, ...] in the rows of the logits (e.g. each
  deletion's statistics recalibrated from its position on, which leaves the shared prefix exact); None: the
  stored statistics for every stream."""
  if stream_stats is not None:
    return _wavefront_own_stats(model, variables["params"], stream_stats, x, branch_scale)
  apply = lambda h, *a, **kw: model.apply(variables, h, *a, **kw)
  streams = apply(x, method=model.embed)[None]
  for t in range(model.layout.num_blocks):
    s, b = streams.shape[:2]
    new = deleted_block_output(model, variables, streams[0], t)
    out = apply(streams.reshape((s * b,) + streams.shape[2:]), t, method=model.block,
                mask=None if branch_scale is None else branch_scale[t])
    streams = jnp.concatenate([out.reshape((s, b) + out.shape[1:]), new[None]])
  s, b = streams.shape[:2]
  return apply(streams.reshape((s * b,) + streams.shape[2:]), method=model.readout).reshape(s, b, -1)


def _wavefront_own_stats(model, params: dict, stats: dict, x: Any, branch_scale: Optional[Any]) -> Any:
  """`wavefront_logits` with each stream's own statistics: the streams run vmapped (the convolutions, whose
  weights all streams share, still see one batch) and the stream deleting t branches off with its own."""
  rows = lambda lo, hi: jax.tree.map(lambda a: a[lo:hi], stats)
  one = lambda i: jax.tree.map(lambda a: a[i], stats)
  apply = lambda st, h, *a, **kw: model.apply({"params": params, "batch_stats": st}, h, *a, **kw)
  streams = apply(one(0), x, method=model.embed)[None]  # the stem's statistics never change under a lesion
  for t in range(model.layout.num_blocks):
    s = streams.shape[0]
    new = apply(one(1 + t), streams[0], t, method=model.deleted)
    out = jax.vmap(lambda st, h: apply(st, h, t, method=model.block,
                                       mask=None if branch_scale is None else branch_scale[t]))(rows(0, s), streams)
    streams = jnp.concatenate([out, new[None]])
  return jax.vmap(lambda st, h: apply(st, h, method=model.readout))(stats, streams)


@cached
def _sweep_fn(model, mesh, scaled: bool, own_stats: bool):
  def sweep(v, stats, scale, x, y, w):
    logits = wavefront_logits(model, v, data_lib.normalize_for(model, x), scale if scaled else None,
                              stats if own_stats else None)
    out = jax.vmap(lambda l: counts(l, y, w, model.num_classes))(logits)
    return jax.lax.psum(out, "data")
  return shard(sweep, mesh, (P(), P(), P(), P("data"), P("data"), P("data")), P())


CHUNKS = 50  # at most this many resumable chunks of test images per sweep


def single_deletion_sweep(model, variables: dict, split: data_lib.Split, *, batch_size: int = 500,
                          memory_budget: int = DEFAULT_BUDGET, mesh=None, branch_scale: Optional[Any] = None,
                          stream_stats: Optional[dict] = None, resume_dir: Optional[str] = None,
                          resume_key: Optional[dict] = None) -> dict:
  """Every single deletion by the prefix-shared wavefront; equals `evaluate` on `masks.single_deletions(layout)`
  (with the same `branch_scale`; with `stream_stats`, the statistics `sweep.recalibrated_stack` gives those
  masks and the full network, as `evaluate` under that BatchNorm mode). Returns evaluate's keys for the n
  deletions plus "full_error" and "full_class_accuracy" of the unlesioned network; images are sharded
  over `mesh`. `resume_dir`: finished chunks of test images are kept there (`progress.ChunkStore`, under a key
  of everything the numbers depend on plus `resume_key`), so a rerun after a kill continues."""
  mesh = mesh if mesh is not None else data_mesh()
  n, num_classes, labels = model.layout.num_blocks, model.num_classes, np.asarray(split[1])
  if len(labels) == 0:
    raise ValueError("the evaluation split is empty")
  fit = memory_budget // activation_bytes(model, num_streams=n + 1, image_hw=tuple(np.shape(split[0])[1:3]))
  batch_size = balanced_batch(min(batch_size, fit), len(labels), mesh.size)

  fn = _sweep_fn(model, mesh, branch_scale is not None, stream_stats is not None)
  scale = np.ones(n, np.float32) if branch_scale is None else _check_scale(branch_scale, n)
  all_batches = list(batches((split[0], labels), batch_size))
  per_chunk = -(-len(all_batches) // CHUNKS)
  chunks = [all_batches[i:i + per_chunk] for i in range(0, len(all_batches), per_chunk)]
  store = None
  if resume_dir is not None:
    key = dict(resume_key or {}, kind="prefix-shared single deletions", model=type(model).__name__,
               variables_sha256=checkpoints.fingerprint(variables), test_sha256=progress_lib.digest(*split),
               batch_size=batch_size, per_chunk=per_chunk, branch_scale=scale.tolist(),
               stream_stats_sha256=None if stream_stats is None else progress_lib.digest(
                   *jax.tree.leaves(jax.device_get(stream_stats))))
    store = progress_lib.ChunkStore(resume_dir, key, len(chunks), writer=jax.process_index() == 0)
  chunk_correct, chunk_top5 = np.zeros((len(chunks), n + 1, num_classes)), np.zeros((len(chunks), n + 1))
  done = np.zeros(len(chunks), bool)
  for i, (c, t) in ({} if store is None else store.load()).items():
    chunk_correct[i], chunk_top5[i], done[i] = c, t, True
  if store is not None and jax.process_count() > 1:  # process 0 holds the store: every process skips alike
    done, chunk_correct, chunk_top5 = (np.asarray(a) for a in multihost_utils.broadcast_one_to_all(
        (done, chunk_correct, chunk_top5)))
  todo = np.flatnonzero(~done)
  progress = Progress("prefix-shared single-deletion sweep",
                      (n + 1) * int(sum(w.sum() for i in todo for _, _, w in chunks[i])))
  stats, finished = ({} if stream_stats is None else stream_stats), 0
  for i in todo:
    acc = None
    for x, y, w in chunks[i]:
      out = fn(variables, stats, scale, x, y, w)
      acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
      finished += int(w.sum())
      progress.update((n + 1) * finished)
    chunk_correct[i], chunk_top5[i] = (np.asarray(a) for a in multihost_utils.process_allgather(acc, tiled=True))
    if store is not None:
      store.save(int(i), chunk_correct[i], chunk_top5[i])
  progress.update((n + 1) * finished, force=True)
  correct, top5 = chunk_correct.sum(0), chunk_top5.sum(0)
  full = summary(correct[:1], top5[:1], labels, num_classes)
  out = summary(correct[1:], top5[1:], labels, num_classes)
  out.update({f"full_{k}": v[0] for k, v in full.items()})
  return out
