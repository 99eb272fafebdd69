"""Per-example statistics: group summaries and the lesion link, the numbers `per_example_report` assembles.

From per-image values: quantiles per group (`group_quantiles`), Spearman correlations with bootstrap and
Fisher-z intervals, optionally partial on a control (`rank_correlation`), and how many single deletions flip
each image (`flip_counts`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import stats

from resnet_ensembles.paths.per_example import Array

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
