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

Across a data set: `profile_dataset` (chunked to files so a kill loses at most a chunk), group summaries
(`group_quantiles`), and the lesion link (`rank_correlation`: Spearman with bootstrap and Fisher-z
intervals). Per-image lesion predictions come from the lesion engine (a layer beside this one), so the
main (experiments/path_usage.py) computes them and hands the arrays in.
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
from scipy import stats

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


# --- across a data set -------------------------------------------------------------------------------

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def describe(values: Array) -> dict:
  """count, mean and the QUANTILES of a 1-D array."""
  v = np.asarray(values, np.float64)
  if v.size == 0:
    return dict(count=0)
  q = np.quantile(v, QUANTILES)
  return dict(count=int(v.size), mean=float(v.mean()), **{f"q{int(100 * p)}": float(x) for p, x in zip(QUANTILES, q)})


def group_quantiles(per_image: dict, groups: Array, names: Optional[list] = None,
                    keys: tuple = ("peak", "mean_length", "lo", "hi", "width")) -> dict:
  """{group name: {key: describe(per_image[key] within the group)}} for each distinct value of `groups`."""
  groups = np.asarray(groups)
  out = {}
  for i, g in enumerate(np.unique(groups)):
    sel = groups == g
    name = str(names[int(g)]) if names is not None else str(g.item() if hasattr(g, "item") else g)
    out[name] = {k: describe(np.asarray(per_image[k])[sel]) for k in keys}
  return out


def histogram(values: Array, n: int) -> list[int]:
  """Counts of the integer values 0..n."""
  return np.bincount(np.asarray(values, np.int64), minlength=n + 1)[:n + 1].tolist()


def deciles(values: Array) -> np.ndarray:
  """Decile index 0..9 of each value (ranks, so ties split evenly between neighbouring deciles)."""
  r = stats.rankdata(values, method="ordinal") - 1
  return (10 * r // len(r)).astype(np.int64)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a = a - a.mean(-1, keepdims=True)
  b = b - b.mean(-1, keepdims=True)
  return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def _residual_rows(r: np.ndarray, rc: np.ndarray) -> np.ndarray:
  """Rows of r minus their least-squares line on the rows of rc."""
  r, rc = r - r.mean(-1, keepdims=True), rc - rc.mean(-1, keepdims=True)
  return r - (r * rc).sum(-1, keepdims=True) / (rc * rc).sum(-1, keepdims=True) * rc


def _rank_stats(idx: np.ndarray, x: np.ndarray, y: np.ndarray, c: Optional[np.ndarray]) -> tuple:
  """Spearman's rho (and the partial one given c) of the resamples idx [R, m], vectorised over rows."""
  rx, ry = stats.rankdata(x[idx], axis=-1), stats.rankdata(y[idx], axis=-1)
  rho = _pearson_rows(rx, ry)
  if c is None:
    return rho, None
  rc = stats.rankdata(c[idx], axis=-1)
  return rho, _pearson_rows(_residual_rows(rx, rc), _residual_rows(ry, rc))


def rank_correlation(x: Array, y: Array, *, control: Optional[Array] = None, n_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0, block: int = 100) -> dict:
  """Spearman's rho between x and y (scipy.stats.spearmanr, average ranks for ties) with two intervals: a
  percentile bootstrap over images (`n_resamples` resamples of the (x, y) pairs with replacement, numpy
  seeded by `seed`; vectorised, `block` resamples at a time) and Fisher's z (atanh(rho) +- z_(1+c)/2 *
  sqrt(1.06 / (m - 3)), the Fieller et al. variance for Spearman's rho). `control`: also the partial rank
  correlation given `control` (Pearson correlation of the ranks of x and y after removing a least-squares
  line on control's ranks), with its own bootstrap interval from the same resamples."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1 or x.size < 4:
    raise ValueError("x and y must be 1-D arrays of the same length, at least 4")
  c = None if control is None else np.asarray(control, np.float64)
  m = x.size
  rho, p = stats.spearmanr(x, y)
  z, half = np.arctanh(rho), stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(1.06 / (m - 3))
  rng = np.random.default_rng(seed)
  boots, partials = [], []
  for start in range(0, n_resamples, block):
    idx = rng.integers(0, m, (min(block, n_resamples - start), m))
    r, pr = _rank_stats(idx, x, y, c)
    boots.append(r)
    partials.append(pr)
  tail = [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2]
  ci = lambda v: [float(q) for q in np.nanpercentile(np.concatenate(v), tail)] if v else None
  out = dict(spearman=float(rho), p_value=float(p), n=int(m), confidence=confidence, bootstrap_ci=ci(boots),
             bootstrap_resamples=n_resamples, fisher_z_ci=[float(np.tanh(z - half)), float(np.tanh(z + half))])
  if c is not None:
    out["partial_given_control"] = dict(rho=float(_rank_stats(np.arange(m)[None], x, y, c)[1][0]),
                                        bootstrap_ci=ci(partials))
  return out


def flip_counts(full_pred: Array, deletion_preds: Array, labels: Array) -> dict:
  """Per image, from predictions of the full network [N] and of each single deletion [D, N]: how many
  deletions change the prediction ("flips"), and how many turn a correct prediction wrong ("breaks",
  0 for images the full network gets wrong)."""
  full_pred, deletion_preds, labels = (np.asarray(a) for a in (full_pred, deletion_preds, labels))
  changed = deletion_preds != full_pred[None]
  breaks = changed & (full_pred == labels)[None]
  return dict(flips=changed.sum(0), breaks=breaks.sum(0), per_deletion_error=(deletion_preds != labels[None]).mean(1),
              per_deletion_flip_rate=changed.mean(1))


def _pixels(img: np.ndarray) -> dict:
  """A uint8 image as JSON: shape and base64 of its bytes (the figure draws it from the JSON alone)."""
  import base64
  img = np.ascontiguousarray(img, np.uint8)
  return dict(shape=list(img.shape), base64=base64.b64encode(img.tobytes()).decode())


def image_from_json(d: dict) -> np.ndarray:
  import base64
  return np.frombuffer(base64.b64decode(d["base64"]), np.uint8).reshape(d["shape"])


def _round(a, digits: int = 5) -> list:
  return [float(f"{x:.{digits}g}") for x in np.asarray(a, np.float64)]


def analyze(prof: dict, preds: Array, labels: Array, images: np.ndarray, *, share: float = 0.9, grid: int = 16,
            n_resamples: int = 2000, seed: int = 0, sweep: Optional[dict] = None,
            variables_sha256: str = "", class_names: Optional[list] = None,
            test_index: Optional[Array] = None) -> dict:
  """Everything the per-example study reports, from per-image profiles `prof` (`profile_dataset`), the
  single-deletion predictions `preds` [n+1, N] (row 0: full network, row 1+i: block i deleted), labels and
  the images (for the grid). `sweep`: a committed single-deletion sweep JSON to check the per-lesion
  errors against (when it studied the same network). `test_index`: each image's index in the test split
  (default 0..N-1). Bootstrap intervals for the headline gradient ("image"); Fisher z for "block0"."""
  labels, preds = np.asarray(labels), np.asarray(preds)
  test_index = np.arange(len(labels)) if test_index is None else np.asarray(test_index)
  n = prof["image"].shape[1] - 1
  num = len(labels)
  if preds.shape != (n + 1, num):
    raise ValueError(f"deletion predictions must be [{n + 1}, {num}], got {preds.shape}")
  tape_pred = np.argmax(prof["logits"], -1)
  full_pred = preds[0]
  correct = full_pred == labels
  flips = flip_counts(full_pred, preds[1:], labels)
  loss = np.asarray(prof["loss"], np.float64)
  loss_decile = deciles(loss)
  per = {w: summarize(prof[w], share) for w in WHERE}
  out = dict(num_images=num, share=share, which_headline="image", full_error=float(1 - correct.mean()),
             tape_vs_wavefront_prediction_agreement=float((tape_pred == full_pred).mean()),
             max_per_image_sum_error=float(np.max(prof["sum_error"])) if "sum_error" in prof else None,
             distribution={}, groups={}, lesion_link={}, loss_link={}, correct_vs_wrong={})
  out["mean_profile"] = {w: _round(prof[w].mean(0)) for w in WHERE}
  normed = {w: prof[w] / np.maximum(prof[w].sum(1, keepdims=True), 1e-30) for w in WHERE}
  out["mean_normalized_profile"] = {w: {"all": _round(normed[w].mean(0)), "correct": _round(normed[w][correct].mean(0)),
                                        "wrong": _round(normed[w][~correct].mean(0))} for w in WHERE}
  windows_ = {}
  for w in WHERE:
    s = per[w]
    pairs, counts = np.unique(np.stack([s["lo"], s["hi"]], 1), axis=0, return_counts=True)
    order = np.argsort(-counts)
    windows_[w] = [dict(lo=int(pairs[i, 0]), hi=int(pairs[i, 1]), images=int(counts[i])) for i in order]
    out["distribution"][w] = dict(
        lo=histogram(s["lo"], n), hi=histogram(s["hi"], n), width=histogram(s["width"], n + 1)[1:],
        peak=histogram(s["peak"], n), mean_length=describe(s["mean_length"]), carried=describe(s["carried"]),
        path_fraction=describe(s["path_fraction"]), windows=windows_[w],
        quantiles={k: describe(s[k]) for k in ("lo", "hi", "width", "peak", "mean_length")})
    keys = ("peak", "mean_length", "lo", "hi", "width")
    out["groups"][w] = dict(
        correct=group_quantiles(s, np.where(correct, 0, 1), ["correct", "wrong"], keys),
        by_class=group_quantiles(s, labels, class_names, keys),
        by_loss_decile=group_quantiles(s, loss_decile, [f"d{i + 1}" for i in range(10)], keys),
        by_flips=group_quantiles(s, flips["flips"], None, keys))
    mw = stats.mannwhitneyu(s["mean_length"][~correct], s["mean_length"][correct]) if 0 < correct.sum() < num else None
    out["correct_vs_wrong"][w] = dict(
        mean_length_mannwhitney_p=float(mw.pvalue) if mw else None,
        mean_length_auc_wrong_gt_correct=float(mw.statistic / (correct.sum() * (~correct).sum())) if mw else None)
    boot = n_resamples if w == "image" else 0
    out["loss_link"][w] = {k: rank_correlation(s[k], loss, n_resamples=boot, seed=seed) for k in ("mean_length", "peak")}
  out["loss_deciles"] = dict(upper_edges=_round(np.quantile(loss, np.arange(1, 11) / 10)),
                             error=[float(1 - correct[loss_decile == d].mean()) for d in range(10)],
                             mean_flips=[float(flips["flips"][loss_decile == d].mean()) for d in range(10)])
  # the lesion link: does a profile leaning on long paths go with more flipping deletions?
  ok = correct
  for w in WHERE:
    s, boot = per[w], (n_resamples if w == "image" else 0)
    link = {}
    for k in ("peak", "mean_length"):
      link[f"{k}_vs_flips"] = rank_correlation(s[k], flips["flips"], control=loss, n_resamples=boot, seed=seed)
      link[f"{k}_vs_breaks_correct_images"] = (rank_correlation(s[k][ok], flips["breaks"][ok], control=loss[ok],
                                                                n_resamples=boot, seed=seed) if ok.sum() >= 4 else None)
      vals = np.unique(s[k]) if k == "peak" else None
      if k == "peak":
        link["mean_flips_by_peak"] = {str(int(v)): dict(images=int((s[k] == v).sum()),
                                                        mean_flips=float(flips["flips"][s[k] == v].mean()))
                                      for v in vals}
    q = deciles(s["mean_length"])
    link["mean_flips_by_mean_length_decile"] = dict(
        mean_length_median=[float(np.median(s["mean_length"][q == d])) for d in range(10)],
        mean_flips=[float(flips["flips"][q == d].mean()) for d in range(10)],
        mean_breaks_correct=[float(flips["breaks"][(q == d) & ok].mean()) for d in range(10)])
    out["lesion_link"][w] = link
  out["flips"] = dict(histogram=histogram(flips["flips"], n), describe=describe(flips["flips"]),
                      breaks_histogram_correct=histogram(flips["breaks"][ok], n),
                      per_deletion_error=_round(flips["per_deletion_error"]),
                      per_deletion_flip_rate=_round(flips["per_deletion_flip_rate"]))
  if sweep is not None:
    net = next((x for x in sweep.get("networks", []) if x.get("variables_sha256") == variables_sha256), None)
    if net is None:
      out["sweep_check"] = dict(matched=False, note="the sweep JSON studied another network (fingerprint)")
    else:
      errs = {int(r["deleted"]): r["error"] for r in net["rows"]}
      ours = flips["per_deletion_error"]
      out["sweep_check"] = dict(matched=True, full_error_sweep=net["full_error"],
                                max_abs_error_difference=float(max(abs(ours[i] - errs[i]) for i in errs)),
                                full_error_difference=float(abs(out["full_error"] - net["full_error"])))
  s = per["image"]
  order = np.argsort(-s["mean_length"], kind="stable")
  pick = lambda idx: [dict(index=int(test_index[i]), label=int(labels[i]), pred=int(full_pred[i]), loss=float(loss[i]),
                           mean_length=float(s["mean_length"][i]), peak=int(s["peak"][i]), lo=int(s["lo"][i]),
                           hi=int(s["hi"][i]), flips=int(flips["flips"][i]), pixels=_pixels(images[i])) for i in idx]
  out["grid"] = dict(longest=pick(order[:grid]), shortest=pick(order[::-1][:grid]), order_by="mean_length (image)")
  out["class_names"] = class_names
  out["per_image"] = dict(
      test_index=test_index.tolist(), label=labels.tolist(), pred=full_pred.tolist(), loss=_round(loss, 4), flips=flips["flips"].tolist(),
      breaks=flips["breaks"].tolist(),
      **{f"{w}_{k}": (per[w][k].tolist() if k in ("lo", "hi", "peak") else _round(per[w][k], 4))
         for w in WHERE for k in ("lo", "hi", "peak", "mean_length")})
  return out


def headline(result: dict) -> list[str]:
  """The key numbers as lines of text."""
  w = result["which_headline"]
  d, g, link = result["distribution"][w], result["groups"][w]["correct"], result["lesion_link"][w]
  top = d["windows"][0]
  fmt = lambda c: (f"rho {c['spearman']:+.3f} (bootstrap {100 * c['confidence']:.0f}% CI "
                   f"[{c['bootstrap_ci'][0]:+.3f}, {c['bootstrap_ci'][1]:+.3f}], Fisher z "
                   f"[{c['fisher_z_ci'][0]:+.3f}, {c['fisher_z_ci'][1]:+.3f}])")
  q = lambda x: f"median {x['q50']:.3g} (IQR {x['q25']:.3g}-{x['q75']:.3g})"
  lines = [f"{result['num_images']} images, {result['method']} ||G_k|| at the {w}: most common window "
           f"{top['lo']}-{top['hi']} ({top['images']} images); peak {q(d['quantiles']['peak'])}; mean length {q(d['mean_length'])}",
           f"correct: peak {q(g['correct']['peak'])}, mean length {q(g['correct']['mean_length'])}; wrong: peak "
           f"{q(g['wrong']['peak'])}, mean length {q(g['wrong']['mean_length'])}",
           f"peak length vs single-deletion flips: {fmt(link['peak_vs_flips'])}",
           f"mean length vs flips: {fmt(link['mean_length_vs_flips'])}; given the loss: partial rho "
           f"{link['mean_length_vs_flips']['partial_given_control']['rho']:+.3f}"]
  return lines
