"""Cheap per-branch scores that layer pruning ranks blocks by, from one forward and one backward pass.

For branch i with input stream h_i, output h_{i+1} and d_i = `model.deleted(h_i, i)` (what the stream would
be without the branch: the shortcut), the branch's contribution is b_i = h_{i+1} - d_i. Every score is
larger for a branch that matters more:

  block_influence   1 - cos(d_i, h_{i+1}), per token / pixel (ShortGPT's Block Influence, Men et al. 2024)
  angular           arccos(cos(d_i, h_{i+1})) / pi per token / pixel: Gromov et al. 2024 with a span of one;
                    `span_angular[l, s]` is the same between the stream entering l carried past s deleted
                    blocks and the stream leaving block l + s - 1 (their choice of s contiguous blocks)
  norm_ratio        |b_i| / |d_i| per example
  lens_drop         logit lens: the loss of the readout on the stream before branch i minus after it (each
                    stream carried to the readout through the later blocks' shortcuts: exact for a ViT)
  refinement        cos(b_i, -dL/dh_i) per example (Jastrzebski et al. 2018); where the branch changes the
                    stream's shape (a downsampling opener), the gradient at its output h_{i+1}
Each is a mean over the evaluation images; `spearman_ci` puts a score beside a lesion cost. A language model
(`input_stats` "tokens") takes token windows [N, T] and their next tokens [N, T] as the split: its loss is the
mean nats/token of a window, and each score a mean over windows.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
# (scipy.stats is imported in the functions that use it: importing it costs every process ~0.7 s)

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion.common import batches

SCORES = ("block_influence", "angular", "norm_ratio", "lens_drop", "refinement")
_EPS = 1e-12


def _cos(a, b, axis):
  return jnp.sum(a * b, axis) / jnp.sqrt(jnp.sum(a * a, axis) * jnp.sum(b * b, axis) + _EPS)


def _per_example(t):
  return t.reshape(t.shape[0], -1)


def _token_angle(a, b):
  """Per example: mean over tokens / pixels of (1 - cos, arccos(cos) / pi) along the feature axis."""
  c = jnp.clip(_cos(a, b, -1), -1.0, 1.0)
  c = c.reshape(c.shape[0], -1)
  return jnp.mean(1.0 - c, -1), jnp.mean(jnp.arccos(c) / jnp.pi, -1)


def _loss(logits, y):
  """Per example: the cross-entropy of its label, or the mean over its tokens' next-token labels."""
  loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1)[..., 0]
  return loss.reshape(loss.shape[0], -1).mean(-1)


def _inputs(model, x):
  return x if getattr(model, "input_stats", None) == "tokens" else data_lib.normalize_for(model, x)


def _score_fn(model):
  n = model.layout.num_blocks

  def run(v, x, y, w):
    apply = lambda h, *a, **kw: model.apply(v, h, *a, **kw)
    carry = lambda h, start, stop: [h := apply(h, q, method=model.deleted) for q in range(start, stop)] and h

    def forward(eps):
      hs = [apply(_inputs(model, x), method=model.embed) + eps[0]]
      for p in range(n):
        hs.append(apply(hs[-1], p, method=model.block) + eps[p + 1])
      return jnp.sum(_loss(apply(hs[-1], method=model.readout), y) * w), hs

    shapes = jax.eval_shape(lambda: forward([0.0] * (n + 1))[1])
    (loss, hs), grads = jax.value_and_grad(forward, has_aux=True)([jnp.zeros(s.shape, s.dtype) for s in shapes])
    out = {s: [] for s in SCORES}
    lens = []
    for p in range(n + 1):
      h = hs[p] if p == n else carry(hs[p], p, n)
      lens.append(jnp.sum(_loss(apply(h, method=model.readout), y) * w))
    span = jnp.full((n + 1, n + 1), jnp.nan)
    for p in range(n):
      d = apply(hs[p], p, method=model.deleted)
      bi, ang = _token_angle(d, hs[p + 1])
      b = _per_example(hs[p + 1] - d)
      g = grads[p] if grads[p].shape == hs[p + 1].shape else grads[p + 1]
      out["block_influence"].append(jnp.sum(bi * w))
      out["angular"].append(jnp.sum(ang * w))
      out["norm_ratio"].append(jnp.sum(jnp.linalg.norm(b, axis=-1) / (jnp.linalg.norm(_per_example(d), axis=-1)
                                                                       + _EPS) * w))
      out["refinement"].append(jnp.sum(_cos(b, -_per_example(g), -1) * w))
      out["lens_drop"].append(lens[p] - lens[p + 1])
      c = hs[p]
      for s in range(1, n - p + 1):
        c = apply(c, p + s - 1, method=model.deleted)
        span = span.at[p, s].set(jnp.sum(_token_angle(c, hs[p + s])[1] * w))
    return {"scores": {k: jnp.stack(v_) for k, v_ in out.items()}, "lens_loss": jnp.stack(lens), "loss": loss,
            "span_angular": span}
  return jax.jit(run)


def branch_scores(model, variables: dict, split: data_lib.Split, *, batch_size: int = 100) -> dict:
  """{"scores": {name: [n]}, "lens_loss": [n + 1] (nats, depth 0 = the embedding), "span_angular": [n + 1,
  n + 1] (NaN where undefined), "loss": the full network's mean loss} over `split`."""
  labels = np.asarray(split[1])
  if len(labels) == 0:
    raise ValueError("the evaluation split is empty")
  fn, acc = _score_fn(model), None
  for x, y, w in batches((split[0], labels), min(batch_size, len(labels))):
    out = jax.tree.map(lambda a: np.asarray(a, np.float64), fn(variables, x, y, w))
    acc = out if acc is None else jax.tree.map(np.add, acc, out)
  return jax.tree.map(lambda a: a / len(labels), acc)


def spearman_ci(a, b, num_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
  """Spearman's rho of a and b over branches, with a percentile bootstrap CI (branches resampled)."""
  from scipy import stats
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or len(a) < 3:
    raise ValueError(f"spearman_ci needs two equal 1-d arrays of >= 3 values, got {a.shape} and {b.shape}")
  rho = float(stats.spearmanr(a, b)[0])
  idx = np.random.default_rng(seed).integers(0, len(a), (num_boot, len(a)))
  ra, rb = stats.rankdata(a[idx], axis=1), stats.rankdata(b[idx], axis=1)   # Spearman: Pearson of the ranks
  ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
  ok = (np.ptp(a[idx], 1) > 0) & (np.ptp(b[idx], 1) > 0)   # a resample of one repeated value has no rank order
  boot = np.sum(ra * rb, 1)[ok] / np.sqrt(np.sum(ra * ra, 1) * np.sum(rb * rb, 1))[ok]
  lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)]) if len(boot) else (np.nan, np.nan)
  return {"rho": rho, "lo": float(lo), "hi": float(hi), "n": int(len(a))}
