"""BatchNorm statistics for a lesioned network (the paper evaluates with the stored ones).

`recalibrated_stats` re-estimates them on a few training batches, as `sweep.evaluate(bn="recalibrate")` does,
in one of two scopes:

* downstream (`first` given; bn="recalibrate"): a position before the lesion's first changed position sees
  exactly the input it sees in the deployed network, so its stored statistics are exact and stay; that
  prefix runs with them (inference mode), and only the positions from `first` on, plus the final norm, are
  re-estimated from the batches' statistics. The intact network (`first` = n) keeps every stored statistic,
  so costs are measured against the network as deployed.
* all (`first` None; bn="recalibrate_all"): every statistic re-estimated with the whole network in training
  mode. This shifts the intact network itself (results/lesion/bn_check measures by how much).

Both trace. `recalibrated_stats_stack` recalibrates a whole stack of lesions inside one program (what
`sweep.evaluate` runs): in the downstream scope the deployed network's pass over each batch, the prefix every
lesion shares, runs once for the stack, and each lesion runs one training-mode pass per position.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.models.layout import Layout

BN_MOMENTUM = 0.9          # models.py BatchNorm: new = 0.9 * old + 0.1 * batch
UPSTREAM_PREFIX = "stem"   # statistics of the stem (before every block) never change under a lesion


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


def position_of(name: str) -> Optional[int]:
  """The block position a statistics entry belongs to ("block_07", "proj_07": 7), or None (stem, head)."""
  head, _, tail = name.rpartition("_")
  return int(tail) if head and tail.isdigit() else None


def first_change(mask: Any, order: Any, num_blocks: int) -> Any:
  """The first position where a lesion differs from the intact network (a deleted block, or a position
  running another block's parameters); `num_blocks` when it does not. Traceable."""
  changed = jnp.asarray(mask) == 0
  if order is not None:
    changed = changed | (jnp.asarray(order) != jnp.arange(num_blocks))
  return jnp.where(changed.any(), jnp.argmax(changed), num_blocks)


def _batch_stats_all(model, params, zeros, mask, x):
  """0.1 x every BatchNorm's statistics on batch `x`, the whole network in training mode."""
  _, new = model.apply({"params": params, "batch_stats": zeros}, x, train=True, block_mask=mask,
                       mutable=["batch_stats"])
  return new["batch_stats"]


def _batch_stats_downstream(model, params, stored, zeros, mask, first, x):
  """0.1 x the statistics on batch `x` of the network whose positions before `first` run with their stored
  statistics (inference mode) and the rest in training mode. Each position runs both ways and the stream
  takes the one its side of `first` needs: `first` is traced, one program serves every lesion."""
  deployed, fresh = {"params": params, "batch_stats": stored}, {"params": params, "batch_stats": zeros}
  h = model.apply(deployed, x, method=model.embed)
  out = dict(zeros)
  for pos in range(model.layout.num_blocks):
    kept = model.apply(deployed, h, pos, mask=mask[pos], method=model.block)
    trained, new = model.apply(fresh, h, pos, True, mask=mask[pos], method=model.block, mutable=["batch_stats"])
    out.update({k: v for k, v in new["batch_stats"].items() if position_of(k) == pos})
    h = jnp.where(pos < first, kept, trained)
  _, new = model.apply(fresh, h, True, method=model.readout, mutable=["batch_stats"])
  out.update({k: v for k, v in new["batch_stats"].items() if position_of(k) is None
              and not k.startswith(UPSTREAM_PREFIX)})
  return out


def _merge(stored: dict, avg: dict, mask: Any, first: Any, num_blocks: int) -> dict:
  """Stored statistics where the lesion leaves them exact (before `first`, the stem, unused blocks),
  re-estimated ones elsewhere."""
  out = {}
  for name in stored:
    pos = position_of(name)
    if pos is None:
      fresh = (first < num_blocks) & (not name.startswith(UPSTREAM_PREFIX))
    else:
      fresh = (pos >= first) & ((mask[pos] > 0) if name.startswith("block_") else True)
    out[name] = jax.tree.map(lambda o, n, f=fresh: jnp.where(f, n, o), stored[name], avg[name])
  return out


def recalibrated_stats(model, variables: dict, mask: Any, order: Any, images: Any,
                       first: Optional[Any] = None) -> dict:
  """BatchNorm statistics of one lesioned network: the average over `images` [K, B, 32, 32, 3] (uint8) of
  each batch's statistics in training mode. `first` (`first_change` of the unscaled lesion): re-estimate only
  from that position on; None: re-estimate everything. Blocks with mask 0 keep their stored statistics."""
  lay, params, stored = model.layout, variables["params"], variables["batch_stats"]
  if order is not None:  # train-mode BN cannot take block_order: move the blocks' variables instead
    params, stored = permute_blocks(params, order, lay), permute_blocks(stored, order, lay)
  zeros = jax.tree.map(jnp.zeros_like, stored)
  if mask is None:
    mask = jnp.ones(lay.num_blocks, jnp.float32)

  def add_batch(total, x):  # with zero running stats, the update returns 0.1 * batch statistics
    x = data_lib.normalize_for(model, x)
    new = (_batch_stats_all(model, params, zeros, mask, x) if first is None
           else _batch_stats_downstream(model, params, stored, zeros, mask, first, x))
    return jax.tree.map(jnp.add, total, new), None

  total, _ = jax.lax.scan(add_batch, zeros, images)
  avg = jax.tree.map(lambda t: t / (images.shape[0] * (1 - BN_MOMENTUM)), total)
  stats = (models.keep_stats_of_inactive_blocks(stored, avg, mask) if first is None
           else _merge(stored, avg, mask, first, lay.num_blocks))
  return stats if order is None else permute_blocks(stats, jnp.argsort(order), lay)


def intact_inputs(model, variables: dict, x: Any, scale: Any) -> list:
  """The deployed network's input to every position on a (normalized) batch `x`, branches scaled by `scale`
  as deployed: before its first changed position a lesion sees exactly these."""
  h = model.apply(variables, x, method=model.embed)
  out = []
  for pos in range(model.layout.num_blocks):
    out.append(h)
    h = model.apply(variables, h, pos, mask=scale[pos], method=model.block)
  return out


def _batch_stats_from(model, params, zeros, mask, first, intact: list) -> dict:
  """`_batch_stats_downstream` with the deployed prefix given (`intact_inputs`, shared by every lesion of a
  stack): one training-mode pass per position, its input the deployed network's up to `first`."""
  fresh = {"params": params, "batch_stats": zeros}
  out, h = dict(zeros), intact[0]
  for pos in range(model.layout.num_blocks):
    h, new = model.apply(fresh, jnp.where(pos <= first, intact[pos], h), pos, True, mask=mask[pos],
                         method=model.block, mutable=["batch_stats"])
    out.update({k: v for k, v in new["batch_stats"].items() if position_of(k) == pos})
  _, new = model.apply(fresh, h, True, method=model.readout, mutable=["batch_stats"])
  out.update({k: v for k, v in new["batch_stats"].items() if position_of(k) is None
              and not k.startswith(UPSTREAM_PREFIX)})
  return out


def recalibrated_stats_stack(model, variables: dict, masks: Any, orders: Optional[Any], images: Any,
                             scale: Any, downstream: bool = True, vectorize: bool = True) -> dict:
  """`recalibrated_stats` of every lesion of a stack (masks [M, n] unscaled, orders [M, n] or None), stacked on a
  leading axis M, in one program: the batches are the outer loop, and with `downstream` the deployed network's
  pass over each batch (the prefix every lesion shares) runs once for the whole stack instead of once per lesion.
  `scale` [n]: the branches' test-time scales (a block carries its own where an order moves it). `vectorize`:
  vmap the lesions (masks) or run them in sequence (orders: per-lesion weights would become grouped convs)."""
  lay, n = model.layout, model.layout.num_blocks
  stored = variables["batch_stats"]
  over = (lambda f, a: jax.vmap(f)(a)) if vectorize else (lambda f, a: jax.lax.map(f, a))
  scaled = masks * (scale if orders is None else scale[orders])
  firsts = (jax.vmap(lambda m, o: first_change(m, o, n))(masks, orders) if orders is not None
            else jax.vmap(lambda m: first_change(m, None, n))(masks))

  def lesion_variables(o):
    if o is None:
      return variables["params"], stored
    return permute_blocks(variables["params"], o, lay), permute_blocks(stored, o, lay)

  def add_batch(total, x):
    x = data_lib.normalize_for(model, x)
    intact = intact_inputs(model, variables, x, scale) if downstream else None

    def one(a):  # 0.1 x this lesion's statistics on this batch
      m, o, first = a
      params, st = lesion_variables(o)
      zeros = jax.tree.map(jnp.zeros_like, st)
      return (_batch_stats_from(model, params, zeros, m, first, intact) if downstream
              else _batch_stats_all(model, params, zeros, m, x))
    return jax.tree.map(jnp.add, total, over(one, (scaled, orders, firsts))), None

  total0 = jax.tree.map(lambda a: jnp.zeros((masks.shape[0],) + a.shape, a.dtype), stored)
  total, _ = jax.lax.scan(add_batch, total0, images)

  def finish(a):
    t, m, o, first = a
    avg = jax.tree.map(lambda v: v / (images.shape[0] * (1 - BN_MOMENTUM)), t)
    _, st = lesion_variables(o)
    stats = (_merge(st, avg, m, first, n) if downstream else models.keep_stats_of_inactive_blocks(st, avg, m))
    return stats if o is None else permute_blocks(stats, jnp.argsort(o), lay)
  return over(finish, (total, scaled, orders, firsts))
