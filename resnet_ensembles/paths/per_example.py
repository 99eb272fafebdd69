"""Per-example path usage: which path lengths carry each input's own gradient.

`gradients.decompose` already gives G_k, the sum of all length-k path gradients, for every image of a
batch (the Tape carries the batch axis; with inference BatchNorm an image's gradient is that of its own
loss and does not depend on the rest of the batch); `decomposition_norms` averages their norms. Here the
per-image curves are kept:

  profile  p[b, k] = ||G_k(b)|| (L2 over the image's own gradient), k = 0..n, at two places like the
           batch analysis: "image" (d loss_b / d normalised input image) and "block0" (d loss_b / d the
           input of block 0, i.e. the stem's output, the embedding). method "exact".
           method "sampled" (deep networks, where the O(n^2) VJPs of the exact form cost too much): p[b, k] =
           frequency(k) x the mean over sampled length-k routes of that image's one-path gradient norm, the
           per-image analogue of Fig. 6c's total curve (the paper's estimate). Results say which.
  window   the smallest window [lo, hi] of lengths carrying `share` (0.9) of sum_k p[b, k], with
           `analysis.effective_range`'s semantics (ties go to the larger share, then the smaller lo),
           vectorised over images (`windows`).
  peak     argmax_k p[b, k]; mean length sum_k k p[b, k] / sum_k p[b, k].

`mean over images of p[:, k]` ("exact") is `decomposition_norms(tape)[where][k]` of the same batch, and
the per-image G_k sum to that image's full gradient (tests/test_per_example_paths.py).

Across a data set: `profile_dataset` (chunked to files so a kill loses at most a chunk); group summaries,
the lesion link are in `per_example_stats`, the report in `per_example_report`. Per-image lesion predictions
come from the lesion engine (a layer beside this one), so the main (experiments/path_usage.py) computes them
and hands the arrays in.
"""
from __future__ import annotations

import glob
import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.paths.analysis import path_length_distribution, sample_routes
from resnet_ensembles.paths.gradients import Tape, check_model, decompose, forward_tape, full_gradient, routed_gradient

Array = Any
WHERE = ("image", "block0")
METHODS = ("exact", "sampled")


def _per_image_norm(g: Array) -> Array:
  """[..., B, H, W, C] -> [..., B]: each image's L2 norm."""
  return jnp.sqrt(jnp.sum(jnp.square(g), axis=(-3, -2, -1)))


def _rel_error(parts_sum: Array, full: Array) -> Array:
  """Per image: max |sum_k G_k - grad| / max |grad| (the batch check of `decomposition_norms`, per image)."""
  axes = (-3, -2, -1)
  return jnp.max(jnp.abs(parts_sum - full), axis=axes) / jnp.maximum(jnp.max(jnp.abs(full), axis=axes), 1e-30)


@jax.jit
def exact_profiles(tape: Tape) -> dict:
  """Per image b and length k: ||G_k(b)|| at the image and at block 0's input ([B, n+1] each); the
  per-image full-gradient norms [B] and the per-image relative error of sum_k G_k against the gradient."""
  g_x, g_h = decompose(tape)
  full_x, full_h = full_gradient(tape)
  return dict(image=_per_image_norm(g_x).T, block0=_per_image_norm(g_h).T,
              full_image=_per_image_norm(full_x), full_block0=_per_image_norm(full_h),
              sum_error=jnp.maximum(_rel_error(g_x.sum(0), full_x), _rel_error(g_h.sum(0), full_h)))


@jax.jit
def sampled_profiles(tape: Tape, routes: Array) -> dict:
  """Per image: frequency(k) x the mean one-path gradient norm over the routes of length k ([B, n+1] each;
  every length 0..n must have at least one route), and the per-route norms [R, B] themselves."""
  n = routes.shape[1]
  g_x, g_h = jax.vmap(routed_gradient, in_axes=(None, 0))(tape, routes)
  onehot = jax.nn.one_hot(jnp.round(routes.sum(1)).astype(jnp.int32), n + 1)  # [R, n+1]
  freq = jnp.asarray(path_length_distribution(n)["frequency"], jnp.float32)
  out = {}
  for name, g in (("image", g_x), ("block0", g_h)):
    norms = _per_image_norm(g)                                       # [R, B]
    mean = (onehot.T @ norms) / onehot.sum(0)[:, None]               # [n+1, B]
    out[name], out[f"{name}_route_norms"] = (freq[:, None] * mean).T, norms
  return out


def windows(curves: Array, share: float = 0.9) -> dict:
  """`analysis.effective_range` for every row of `curves` [B, n+1] at once (float64): arrays lo, hi,
  carried (share of the row's sum inside the window) and path_fraction (share of the 2^n paths in it)."""
  c = np.asarray(curves, np.float64)
  if c.ndim != 2 or c.shape[1] < 2 or not np.all(np.isfinite(c)) or np.any(c < 0):
    raise ValueError("curves must be finite, non-negative rows over lengths 0..n, shaped [images, n+1]")
  if not 0.0 < share <= 1.0:
    raise ValueError(f"share must be in (0, 1], got {share}")
  b, n = c.shape[0], c.shape[1] - 1
  csum = np.concatenate([np.zeros((b, 1)), np.cumsum(c, axis=1)], axis=1)        # [B, n+2]
  width = np.arange(1, n + 2)[:, None]                                             # [W, 1]
  lo = np.arange(n + 1)[None, :]                                                   # [1, L]
  valid = lo + width <= n + 1                                                      # [W, L]
  carried = np.where(valid, np.take(csum, np.minimum(lo + width, n + 1), axis=1) - csum[:, None, :n + 1], -np.inf)
  need = share * csum[:, -1] * (1 - 1e-12)
  ok = carried.max(-1) >= need[:, None]                                            # [B, W]
  w = np.argmax(ok, axis=1)                                                        # first width that suffices
  best = carried[np.arange(b), w]                                                  # [B, L]
  lo_b = np.argmax(best, axis=1)
  hi_b = lo_b + w
  total = csum[:, -1]
  share_in = np.where(total > 0, best[np.arange(b), lo_b] / np.where(total > 0, total, 1), 1.0)
  fcum = np.concatenate([[0.0], np.cumsum(path_length_distribution(n)["frequency"])])
  return dict(lo=lo_b, hi=hi_b, carried=share_in, path_fraction=fcum[hi_b + 1] - fcum[lo_b])


def summarize(curves: Array, share: float = 0.9) -> dict:
  """Per image: window (lo, hi, width = hi - lo + 1, carried, path_fraction), peak length (argmax) and
  mean length (sum_k k p_k / sum_k p_k) of the profile rows `curves` [B, n+1]."""
  c = np.asarray(curves, np.float64)
  out = windows(c, share)
  total = c.sum(1)
  out.update(width=out["hi"] - out["lo"] + 1, peak=np.argmax(c, axis=1),
             mean_length=np.where(total > 0, c @ np.arange(c.shape[1]) / np.where(total > 0, total, 1), 0.0))
  return out


def batch_profiles(model, variables, x: Array, labels: Array, *, method: str = "exact",
                   routes: Optional[Array] = None) -> dict:
  """One batch of normalised images: profiles ("image", "block0" [B, n+1]), logits and per-image loss."""
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  tape = forward_tape(model, variables, x, labels)  # inference BatchNorm: images do not interact
  if method == "exact":
    out = exact_profiles(tape)
  else:
    if routes is None:
      raise ValueError("method 'sampled' needs routes")
    out = {k: v for k, v in sampled_profiles(tape, routes).items() if not k.endswith("route_norms")}
  out = jax.device_get(out)
  out["logits"] = np.asarray(tape.logits)
  out["loss"] = np.asarray(optax.softmax_cross_entropy_with_integer_labels(tape.logits, labels))
  return out


def profile_dataset(model, variables, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 100,
                    method: str = "exact", samples_per_length: int = 4, seed: int = 0,
                    chunk_size: int = 1000, chunk_dir: Optional[str] = None, tag: str = "",
                    progress: Optional[Callable[[int, int, float], None]] = None) -> dict:
  """Profiles of every image (in order): arrays over images of `batch_profiles`' keys, plus "seconds".

  Works chunk by chunk (`chunk_size` images, whole batches); with `chunk_dir`, each chunk is written as
  <chunk_dir>/chunk_<start>_<end>.npz (named with `tag`, e.g. the network's fingerprint and method) and
  a rerun loads the chunks already there. "sampled": `samples_per_length` routes of every length, fresh
  per batch (seeded by `seed` and the batch's first index)."""
  check_model(model)
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if batch_size < 1 or chunk_size < 1 or samples_per_length < 1:
    raise ValueError("batch_size, chunk_size and samples_per_length must be >= 1")
  if len(images) != len(labels) or len(images) == 0:
    raise ValueError(f"need as many labels as images, and at least one: {len(images)} vs {len(labels)}")
  chunk_size = max(batch_size, chunk_size // batch_size * batch_size)
  n, num = model.layout.num_blocks, len(images)
  lengths = np.repeat(np.arange(n + 1), samples_per_length)
  parts, t0, computed = [], time.time(), 0
  for start in range(0, num, chunk_size):
    end = min(start + chunk_size, num)
    path = os.path.join(chunk_dir, f"chunk{tag}_{start:06d}_{end:06d}.npz") if chunk_dir else None
    if path and os.path.exists(path):
      with np.load(path) as z:
        parts.append({k: z[k] for k in z.files})
      continue
    chunk = []
    for s in range(start, end, batch_size):
      e = min(s + batch_size, end)
      x = data_lib.normalize_for(model, jnp.asarray(images[s:e]))
      routes = (sample_routes(jax.random.fold_in(jax.random.PRNGKey(seed), s), n, lengths)
                if method == "sampled" else None)
      chunk.append(batch_profiles(model, variables, x, jnp.asarray(labels[s:e]), method=method, routes=routes))
      computed += e - s
      if progress:
        progress(e, num, time.time() - t0)
    part = {k: np.concatenate([c[k] for c in chunk]) for k in chunk[0]}
    if path:
      os.makedirs(chunk_dir, exist_ok=True)
      tmp = path + ".tmp.npz"
      np.savez(tmp, **part)
      os.replace(tmp, path)
    parts.append(part)
    logging.info("per-example paths: images %d-%d of %d done (%.0f s)", start, end, num, time.time() - t0)
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  out["seconds"], out["computed_images"] = time.time() - t0, computed
  return out


def stale_chunks(chunk_dir: str, tag: str) -> list[str]:
  """Chunk files in `chunk_dir` written for another network/method/size (another `tag`)."""
  return [p for p in glob.glob(os.path.join(chunk_dir, "chunk*.npz")) if not os.path.basename(p).startswith(f"chunk{tag}_")]
