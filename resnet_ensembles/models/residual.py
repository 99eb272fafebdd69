"""What every residual family shares: y = x + m * f(x) with its traced lesion inputs.

The CIFAR/ImageNet ResNets (`cifar`, `imagenet`) and the ViT (`vit`) differ in f, the shortcut and what comes
after the sum; the mechanics that make them lesionable are one definition here, so a new family
(`interface.ResidualStack`) gets them by calling these rather than by copying a sibling's:

  check_block_inputs   the one-line shape errors for block_mask / block_order / grad_route, before tracing
  residual_add         the sum, with a per-block (or per-example) mask and gradient gates (routes)
  shift_cotangent      the path tape: copy k of a K-fold batch receives exactly the length-k paths
  stacked_branch       a transformer's sublayer run with another layer's parameters (a traced block_order)
  layered              a transformer's layers in sequence, or spans of them in parallel (`parallel_from`)
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from resnet_ensembles.models.layout import Layout, check_block_order

Array = Any


def check_block_inputs(what: str, layout: Layout, batch: int, train: bool, block_mask: Optional[Array] = None,
                       block_order: Optional[Array] = None, grad_route: Optional[Array] = None) -> None:
  """Shapes: block_mask [n] or [batch, n], block_order [n] (a valid within-stage permutation, evaluation
  only), grad_route [n] or [2, n]; `what` names the network in the error (e.g. "depth 32")."""
  n = layout.num_blocks
  for name, arr, other in (("block_mask", block_mask, ((batch, n), "(batch, n)")), ("block_order", block_order, None),
                           ("grad_route", grad_route, ((2, n), "(2, n)"))):
    if arr is not None and jnp.shape(arr) != (n,) and (other is None or jnp.shape(arr) != other[0]):
      raise ValueError(f"{name} must have shape ({n},){f' or {other[1]}' if other else ''} for {what}, "
                       f"got {jnp.shape(arr)}")
  if block_order is not None and train:
    raise ValueError("block_order is an evaluation-time lesion; train with the natural order")
  if block_order is not None:
    check_block_order(block_order, layout)


def residual_add(x: Array, branch: Array, mask: Optional[Array], route: Optional[Array], dtype: Any) -> Array:
  """x + m * branch. `mask`: a scalar or one value per example [B]. `route` gates the gradient only: a scalar r
  sends r of it through the branch and 1 - r through the skip; [2] gives the two gates separately."""
  if route is not None:
    r = jnp.asarray(route, dtype)
    to_branch, to_skip = (r[0], r[1]) if r.ndim else (r, 1 - r)
    x = to_skip * x + (1 - to_skip) * jax.lax.stop_gradient(x)
    branch = to_branch * branch + (1 - to_branch) * jax.lax.stop_gradient(branch)
  if mask is None:
    return x + branch
  m = jnp.asarray(mask, dtype)
  return x + (m.reshape(m.shape + (1,) * (branch.ndim - m.ndim)) if m.ndim else m) * branch


@jax.custom_vjp
def _shift(x: Array, groups: Array) -> Array:
  del groups
  return x


def _shift_fwd(x, groups):
  return x, groups


def _shift_bwd(groups, ct):
  k = groups.shape[0]
  ct = ct.reshape((k, -1) + ct.shape[1:])
  ct = jnp.concatenate([jnp.zeros_like(ct[:1]), ct[:-1]], axis=0)
  return ct.reshape((-1,) + ct.shape[2:]), jnp.zeros_like(groups)


_shift.defvjp(_shift_fwd, _shift_bwd)


def shift_cotangent(branch: Array, path_groups: int) -> Array:
  """Identity forward; backward, the branch's cotangent moves from copy k to copy k + 1 of the batch's
  `path_groups` equal copies (copy 0 gets none). Through n blocks, copy k's input gradient is then the sum
  over the paths that cross exactly k branches (`paths.gradients`)."""
  return _shift(branch, jnp.zeros((path_groups,), branch.dtype))


def stacked_branch(module, x: Array, pos: int, order: Array, num_blocks: int, extra: tuple = ()) -> Array:
  """Sublayer `pos` of a transformer (blocks block_00 .. in (attention, MLP) pairs) run with the parameters of
  block order[pos], a traced index among the sublayers of the same kind: a layer order is data, not code."""
  members = range(pos % 2, num_blocks, 2)
  params = module.variables["params"]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[params[f"block_{i:02d}"] for i in members])
  chosen = jax.tree.map(lambda s: s[order[pos] // 2], stacked)
  return getattr(module, f"block_{pos:02d}").clone(parent=None, name=None).apply({"params": chosen}, x, *extra)


def layered(block, x: Array, depth: int, parallel_from: Optional[Array] = None) -> Array:
  """Runs `depth` layers of two blocks each (`block(h, pos)`). `parallel_from` [depth] (Sun et al.'s parallel
  layers): layer l reads the stream as it entered layer parallel_from[l] <= l and adds its change to the current
  stream, so a span of layers that all read the span's input sums their contributions; arange(depth) (or None)
  is the ordinary network."""
  if parallel_from is None:
    for pos in range(2 * depth):
      x = block(x, pos)
    return x
  if jnp.shape(parallel_from) != (depth,):
    raise ValueError(f"parallel_from must have shape ({depth},) (one entry per layer), got {jnp.shape(parallel_from)}")
  entering = []  # the stream as it entered each layer so far
  for layer in range(depth):
    entering.append(x)
    source = jnp.stack(entering)[jnp.clip(parallel_from[layer], 0, layer)]
    out = block(block(source, 2 * layer), 2 * layer + 1)
    # reading its own input, the layer runs as usual (exactly: no x + (out - x) rounding)
    x = jnp.where(parallel_from[layer] >= layer, out, x + (out - source))
  return x
