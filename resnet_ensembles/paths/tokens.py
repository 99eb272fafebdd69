"""The path view on a language model: which path lengths carry the gradient of the next-token loss with respect
to the embedded tokens (Veit et al. Sec. 5.2 on tokens).

One forward `gradients.Tape` from the embedded tokens (`embed` takes the embedded stream, so the tape's input
gradient is the gradient at the embedding). Exact G_k (the sum over all C(n, k) paths of length k) for every
k from `gradients.decompose`; one path's gradient from `gradients.routed_gradient` along a route, for every
route of up to `max_routes` per length (all 2^n when n is small). Magnitudes are per window: the L2 norm over
its tokens and width, averaged over windows. The loss is the summed next-token cross-entropy of a window.
"""
from __future__ import annotations

import itertools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from resnet_ensembles.paths.analysis import effective_range, exponential_fit, path_length_distribution
from resnet_ensembles.paths.gradients import decompose, forward_tape, full_gradient, routed_gradient


def routes_by_length(n: int, max_routes: int, seed: int = 0) -> np.ndarray:
  """[R, n] 0/1 routes: every route of length k when C(n, k) <= max_routes, else max_routes drawn at random."""
  rng, out = np.random.default_rng(seed), []
  for k in range(n + 1):
    if math.comb(n, k) <= max_routes:
      chosen = [list(c) for c in itertools.combinations(range(n), k)]
    else:
      chosen = [sorted(rng.choice(n, k, replace=False).tolist()) for _ in range(max_routes)]
    for c in chosen:
      r = np.zeros(n, np.float32)
      r[c] = 1
      out.append(r)
  return np.stack(out)


def _window_norm(g):  # [..., W, T, D] -> mean over windows of the per-window norm
  return jnp.sqrt(jnp.sum(jnp.square(g), axis=(-2, -1))).mean(-1)


def analyze(model, variables, tokens: np.ndarray, targets: np.ndarray, *, max_routes: int = 32, chunk: int = 16,
            share: float = 0.9, seed: int = 0) -> dict:
  """Per-length magnitudes (one path: mean over routes; all paths: exact G_k), effective window, decay."""
  model.check_tokens(tokens)
  n = model.layout.num_blocks
  t0 = time.time()
  h0 = model.apply(variables, jnp.asarray(tokens), method=model.embed)
  tape = forward_tape(model, variables, h0, jnp.asarray(targets))
  g_k, _ = jax.jit(decompose)(tape)
  full, _ = jax.jit(full_gradient)(tape)
  exact = np.asarray(_window_norm(g_k))
  sum_error = float(jnp.max(jnp.abs(g_k.sum(0) - full)) / jnp.max(jnp.abs(full)))
  routes = routes_by_length(n, max_routes, seed)
  per_route = jax.jit(jax.vmap(lambda r: _window_norm(routed_gradient(tape, r)[0])))
  pad = -len(routes) % chunk
  padded = np.concatenate([routes, np.zeros((pad, n), np.float32)])
  norms = np.concatenate([np.asarray(per_route(jnp.asarray(padded[i:i + chunk])))
                          for i in range(0, len(padded), chunk)])[:len(routes)]
  lengths = routes.sum(1).astype(int)
  mean = np.array([norms[lengths == k].mean() for k in range(n + 1)])
  std = np.array([norms[lengths == k].std() for k in range(n + 1)])
  dist = path_length_distribution(n)
  total = dist["frequency"] * mean
  return dict(num_blocks=n, windows=int(len(tokens)), tokens_per_window=int(tokens.shape[1]),
              routes_per_length=np.bincount(lengths, minlength=n + 1).tolist(),
              one_path_mean=mean.tolist(), one_path_std=std.tolist(), total=total.tolist(),
              exact_g_k=exact.tolist(), full_gradient=float(_window_norm(full)), sum_error=sum_error,
              effective_range=effective_range(total, share), effective_range_exact=effective_range(exact, share),
              decay=exponential_fit(mean), distribution=np.asarray(dist["frequency"]).tolist(),
              seconds=time.time() - t0)
