"""Training-time block masks: the only thing stochastic depth and short-path training add.

A sampler maps a PRNG key to (block_mask, grad_route) for one mini-batch; either may be None. Masks
are [n] (one draw per mini-batch, Huang et al.) or, for per-example stochastic depth, [batch, n]; routes
are [2, n] (branch gates, skip gates; see models.py). The
test-time mask says how each residual branch is scaled when every block runs (None: not scaled).
A dropped block is multiplied by 0, not skipped: skipping it with `nn.cond` gives the same gradients but
ran 17x slower on XLA's CPU backend (benchmarks/skip_dropped_blocks.py), so a masked step costs a full one.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from resnet_ensembles.models.layout import Layout

Sampler = Callable[[jax.Array], tuple[Optional[jax.Array], Optional[jax.Array]]]
KINDS = ("none", "stochastic_depth", "short_path_forward", "short_path_route")


def survival_probabilities(num_blocks: int, p_last: float) -> np.ndarray:
  """Huang et al.'s linear decay: p_l = 1 - l / L * (1 - p_L) for blocks l = 1..L."""
  return 1.0 - np.arange(1, num_blocks + 1) / num_blocks * (1.0 - p_last)


def exactly_k(key: jax.Array, num_blocks: int, k: int) -> jax.Array:
  """A 0/1 float vector with exactly k ones at uniformly random positions."""
  ranks = jnp.argsort(jax.random.uniform(key, (num_blocks,)))
  return (ranks < k).astype(jnp.float32)


def default_num_active(num_blocks: int) -> int:
  """The paper trains 23 of ResNet-110's 54 blocks per mini-batch; keep that fraction."""
  return max(1, int(round(num_blocks * 23 / 54)))


def make_sampler(cfg, layout: Layout, batch_size: Optional[int] = None) -> Optional[Sampler]:
  """cfg: config.train_mask (kind, p_L, num_active, per_example); `batch_size` (global) is needed only
  for per-example stochastic depth."""
  n, kind = layout.num_blocks, cfg.kind
  if kind not in KINDS:
    raise ValueError(f"train_mask.kind must be one of {KINDS}, got {kind!r}")
  if cfg.get("per_example", False) and kind != "stochastic_depth":
    raise ValueError(f"train_mask.per_example applies to stochastic_depth only, not {kind!r}")
  if kind == "none":
    return None
  if kind == "stochastic_depth":
    if not 0.0 < cfg.p_L <= 1.0:
      raise ValueError(f"train_mask.p_L must be in (0, 1], got {cfg.p_L}")
    p = jnp.asarray(survival_probabilities(n, cfg.p_L), jnp.float32)
    if cfg.get("per_example", False):
      if not batch_size or batch_size < 1:
        raise ValueError("per-example stochastic depth needs the batch size")
      return lambda key: (jax.random.bernoulli(key, p, (batch_size, n)).astype(jnp.float32), None)
    return lambda key: (jax.random.bernoulli(key, p).astype(jnp.float32), None)
  k = cfg.num_active or default_num_active(n)
  if not 0 < k <= n:
    raise ValueError(f"train_mask.num_active must be in 1..{n}, got {k}")
  if kind == "short_path_forward":
    return lambda key: (exactly_k(key, n, k), None)
  # Route: gradient enters the branches of the K blocks only, and passes every skip, so the paths that
  # training sees run through subsets of those K blocks: lengths 0..K, Binomial(K, 1/2) (paper: <= 23, ~11.5).
  return lambda key: (None, jnp.stack([exactly_k(key, n, k), jnp.ones((n,), jnp.float32)]))


def test_time_mask(cfg, layout: Layout) -> Optional[np.ndarray]:
  """Branch scales when all blocks run at test time: p_l for stochastic depth, else None."""
  if cfg.kind == "stochastic_depth":
    return survival_probabilities(layout.num_blocks, cfg.p_L).astype(np.float32)
  if cfg.kind == "short_path_forward" and cfg.get("scale_at_test", False):
    k = cfg.num_active or default_num_active(layout.num_blocks)
    return np.full(layout.num_blocks, k / layout.num_blocks, np.float32)
  return None
