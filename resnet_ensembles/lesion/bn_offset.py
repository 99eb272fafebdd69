"""Why a full network recalibrated on training images errs more than with its stored BatchNorm statistics.

The recalibrated lesion sweeps compare every lesion with the full network recalibrated the same way; this
module measures the offset itself: the full network's error with statistics re-estimated on more or fewer
training batches, with or without the training augmentation, and how those statistics differ from the
stored running averages layer by layer (`experiments/bn_check.py` writes all three as JSON).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion.batchnorm import BN_MOMENTUM


def full_network_stats(model, variables: dict, images: np.ndarray, batch_size: int,
                       augment_key: Optional[jax.Array] = None) -> dict:
  """BatchNorm statistics of the unlesioned network averaged over the batches of `images` (uint8, a multiple
  of `batch_size`), each batch augmented as in training (pad-crop, flip; batch i with fold_in(key, i)) when
  `augment_key` is given, else only standardised. Averaging per-batch statistics is what a lesion sweep's
  recalibration does, so the two are comparable."""
  if len(images) % batch_size or not len(images):
    raise ValueError(f"{len(images)} images are not a positive multiple of the batch size {batch_size}")
  stats_in = getattr(model, "input_stats", "cifar10")
  zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])

  @jax.jit
  def batch_stats(x):  # with zero running statistics the update returns (1 - momentum) x the batch's
    _, new = model.apply({"params": variables["params"], "batch_stats": zeros}, x, train=True,
                         mutable=["batch_stats"])
    return new["batch_stats"]

  total = zeros
  num = len(images) // batch_size
  for i in range(num):
    batch = jnp.asarray(images[i * batch_size:(i + 1) * batch_size])
    x = (data_lib.augment(jax.random.fold_in(augment_key, i), batch, stats=stats_in) if augment_key is not None
         else data_lib.normalize_for(model, batch))
    total = jax.tree.map(jnp.add, total, batch_stats(x))
  return jax.tree.map(lambda t: np.asarray(t) / (num * (1 - BN_MOMENTUM)), total)


def compare_stats(stored: dict, recalibrated: dict) -> list[dict]:
  """One row per BatchNorm layer and statistic: for variances the ratio recalibrated / stored per channel
  (median, min, max); for means the median absolute difference beside the median absolute stored mean."""
  rows = []
  flat_r = dict(_flatten(recalibrated))
  for name, a in _flatten(stored):
    a, b = np.asarray(a, np.float64), np.asarray(flat_r[name], np.float64)
    if name.endswith("var"):
      ratio = b / a
      rows.append({"layer": name, "stat": "var", "median_ratio": float(np.median(ratio)),
                   "min_ratio": float(ratio.min()), "max_ratio": float(ratio.max())})
    else:
      rows.append({"layer": name, "stat": "mean", "median_abs_diff": float(np.median(np.abs(b - a))),
                   "median_abs_stored": float(np.median(np.abs(a)))})
  return rows


def _flatten(tree: dict) -> list[tuple[str, np.ndarray]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [("/".join(str(getattr(p, "key", p)) for p in path), leaf) for path, leaf in leaves]


def format_comparison(rows: list[dict]) -> str:
  """The rows of `compare_stats` as aligned text lines, one per layer and statistic."""
  out = []
  for r in rows:
    if r["stat"] == "var":
      out.append(f"{r['layer']:28s} variance ratio recalibrated/stored: median {r['median_ratio']:.3f}  "
                 f"min {r['min_ratio']:.3f}  max {r['max_ratio']:.3f}")
    else:
      out.append(f"{r['layer']:28s} |mean difference| median {r['median_abs_diff']:.4f}  "
                 f"|stored mean| median {r['median_abs_stored']:.4f}")
  return "\n".join(out) + "\n"
