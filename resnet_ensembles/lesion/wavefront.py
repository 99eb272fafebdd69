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
from resnet_ensembles.lesion.common import (DEFAULT_BUDGET, Progress, activation_bytes, balanced_batch, batches,
                                            cached, check_scale as _check_scale, counts, shard, summary)
from resnet_ensembles.parallel.mesh import data_mesh


def deleted_block_output(model, variables: dict, h: Any, pos: int) -> Any:
  """What `model.block(h, pos, mask=0)` returns, without running the branch it would zero."""
  return model.apply(variables, h, pos, method=model.deleted)


def wavefront_logits(model, variables: dict, x: Any, branch_scale: Optional[Any] = None) -> Any:
  """Logits [n + 1, B, C] of the full network (row 0) and of each single deletion (row 1 + i).

  At block t the stack holds the full stream and streams deleting blocks 0..t-1; all run block t in one
  batch, and the stream deleting t branches off the full stream: n(n+1)/2 block evaluations.
  `branch_scale` [n]: the kept branches' test-time scales (stochastic depth's p_l), else 1."""
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


@cached
def _sweep_fn(model, mesh, scaled: bool):
  def sweep(v, scale, x, y, w):
    logits = wavefront_logits(model, v, data_lib.normalize_for(model, x), scale if scaled else None)
    out = jax.vmap(lambda l: counts(l, y, w, model.num_classes))(logits)
    return jax.lax.psum(out, "data")
  return shard(sweep, mesh, (P(), P(), P("data"), P("data"), P("data")), P())


def single_deletion_sweep(model, variables: dict, split: data_lib.Split, *, batch_size: int = 500,
                          memory_budget: int = DEFAULT_BUDGET, mesh=None, branch_scale: Optional[Any] = None) -> dict:
  """Every single deletion (stored BN) by the prefix-shared wavefront; equals `evaluate` on
  `masks.single_deletions(layout)` (with the same `branch_scale`). Returns evaluate's keys for the n
  deletions plus "full_error" and "full_class_accuracy" of the unlesioned network; images are sharded
  over `mesh`."""
  mesh = mesh if mesh is not None else data_mesh()
  n, num_classes, labels = model.layout.num_blocks, model.num_classes, np.asarray(split[1])
  if len(labels) == 0:
    raise ValueError("the evaluation split is empty")
  fit = memory_budget // activation_bytes(model, num_streams=n + 1, image_hw=tuple(np.shape(split[0])[1:3]))
  batch_size = balanced_batch(min(batch_size, fit), len(labels), mesh.size)

  fn = _sweep_fn(model, mesh, branch_scale is not None)
  scale = np.ones(n, np.float32) if branch_scale is None else _check_scale(branch_scale, n)
  progress = Progress("prefix-shared single-deletion sweep", (n + 1) * len(labels))
  acc, done = None, 0
  for x, y, w in batches((split[0], labels), batch_size):
    out = fn(variables, scale, x, y, w)
    acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
    done = min(done + batch_size, len(labels))
    progress.update((n + 1) * done, force=done == len(labels))
  correct, top5 = multihost_utils.process_allgather(acc, tiled=True)
  full = summary(correct[:1], np.asarray(top5)[:1], labels, num_classes)
  out = summary(correct[1:], np.asarray(top5)[1:], labels, num_classes)
  out.update({f"full_{k}": v[0] for k, v in full.items()})
  return out
