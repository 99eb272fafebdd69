"""Per-path gradients on one forward pass (Veit et al. Sec. 5.2): the Tape and what is read off it.

`forward_tape` runs the model once and keeps every block's VJP, taken of `block(h, route=0)` and
`block(h, route=1)` (the model's own gradient routing), so `vjp((a, b)) = skip^T a + branch^T b` at the
true activations, including the post-addition ReLU of the "original" variant. A route sends the
backward pass through chosen branches (one path); `decompose` carries n+1 cotangent components to get
G_k, the sum of all length-k path gradients, for every k at once. Gradients are of the summed per-image
cross-entropy (each image's gradient is that of its own loss); a magnitude is the mean over images of
the per-image L2 norm.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

Array = Any


class Tape(struct.PyTreeNode):
  """One forward pass: the loss cotangent at the last block and the VJPs of every block and the stem."""
  logits: Array
  top: Array
  block_vjps: tuple
  embed_vjp: Any


def check_model(model) -> None:
  if not getattr(model, "residual", False):
    raise ValueError("path analysis needs a ResNet: a plain net has no skip connections, hence no paths")


@functools.partial(jax.jit, static_argnames=("model", "train"))
def forward_tape(model, variables, x: Array, labels: Array, train: bool = False) -> Tape:
  """Runs `model` once on normalized inputs x, keeping each block's VJP (BN in batch mode if `train`)."""
  check_model(model)
  def call(method, *args, **kw):
    if not train:
      return model.apply(variables, *args, method=method, **kw)
    return model.apply(variables, *args, train=True, method=method, mutable=["batch_stats"], **kw)[0]

  h, embed_vjp = jax.vjp(lambda x: call(model.embed, x), x)
  vjps = []
  for pos in range(model.layout.num_blocks):
    both = lambda h, pos=pos: (call(model.block, h, pos, route=0.0), call(model.block, h, pos, route=1.0))
    (h, _), vjp = jax.vjp(both, h)
    vjps.append(vjp)
  def loss(h):
    logits = call(model.readout, h)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum(), logits
  top, logits = jax.grad(loss, has_aux=True)(h)
  return Tape(logits=logits, top=top, block_vjps=tuple(vjps), embed_vjp=embed_vjp)


@jax.jit
def routed_gradient(tape: Tape, route: Array) -> tuple[Array, Array]:
  """(d loss / d image, d loss / d block-0 input) along one route (1: residual branch, 0: skip)."""
  ct = tape.top
  for pos in reversed(range(len(tape.block_vjps))):
    r = jnp.asarray(route[pos], ct.dtype)
    ct, = tape.block_vjps[pos](((1 - r) * ct, r * ct))
  return tape.embed_vjp(ct)[0], ct


@jax.jit
def full_gradient(tape: Tape) -> tuple[Array, Array]:
  """The ordinary gradient (every path): both halves of each block VJP get the whole cotangent."""
  ct = tape.top
  for vjp in reversed(tape.block_vjps):
    ct, = vjp((ct, ct))
  return tape.embed_vjp(ct)[0], ct


@jax.jit
def decompose(tape: Tape) -> tuple[Array, Array]:
  """G_k for k = 0..n, stacked [n+1, ...]: image gradients and block-0-input gradients.

  Component k at the output of block i is nonzero only for k <= n - i, so the stack grows by one
  per block: n(n+3)/2 block VJPs in all, vectorised over k."""
  comps = tape.top[None]
  for pos in reversed(range(len(tape.block_vjps))):
    zero = jnp.zeros_like(comps[:1])
    comps, = jax.vmap(tape.block_vjps[pos])((jnp.concatenate([comps, zero]), jnp.concatenate([zero, comps])))
  return jax.vmap(tape.embed_vjp)(comps)[0], comps


def mean_norm(g: Array, event_ndim: int = 3) -> Array:
  """Mean over the batch axis (the one before the last `event_ndim`: 3 for images and conv activations,
  2 for a transformer's tokens) of the per-image L2 norm."""
  return jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(-event_ndim, 0)))).mean(-1)


@jax.jit
def routed_norms(tape: Tape, routes: Array) -> tuple[Array, Array]:
  """Per-route mean gradient norm at the image and at the block-0 input, vmapped over routes [R, n]."""
  g_x, g_h = jax.vmap(routed_gradient, in_axes=(None, 0))(tape, routes)
  return mean_norm(g_x), mean_norm(g_h, tape.top.ndim - 1)


@jax.jit
def decomposition_norms(tape: Tape) -> dict:
  g_x, g_h = decompose(tape)
  full_x, full_h = full_gradient(tape)
  rel = lambda parts, full: jnp.max(jnp.abs(parts.sum(0) - full)) / jnp.maximum(jnp.max(jnp.abs(full)), 1e-30)
  stream = tape.top.ndim - 1  # a block's activation: [H, W, C] (ResNet) or [tokens, width] (ViT)
  return dict(image=mean_norm(g_x), block0=mean_norm(g_h, stream), full_image=mean_norm(full_x),
              full_block0=mean_norm(full_h, stream), sum_error=jnp.maximum(rel(g_x, full_x), rel(g_h, full_h)))
