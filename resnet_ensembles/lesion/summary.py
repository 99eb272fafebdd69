"""Summaries of a lesion sweep's rows (the JSON `lesion_study.sweep_network` writes), shared by the
figures (plots/lesion.py, plots/variants.py) and the report (report.py), so they group alike."""
from __future__ import annotations

import collections
from typing import Optional

import numpy as np

# What each recalibrating BatchNorm treatment re-estimates, as its sweeps record it (a network entry's
# "recalibration"), so that sweeps of the two scopes are never mixed.
RECAL_SCOPES = {"recalibrate": "from the first changed position", "recalibrate_all": "every statistic"}


def errors_by_k(net: dict) -> dict[int, list[float]]:
  """A k-deletion network entry's errors grouped by the number of deleted blocks, k ascending."""
  by_k = collections.defaultdict(list)
  for r in net["rows"]:
    by_k[int(r["k"])].append(r["error"])
  return dict(sorted(by_k.items()))


def k_means(net: dict) -> dict[int, float]:
  """Mean error per number of deleted blocks."""
  return {k: float(np.mean(v)) for k, v in errors_by_k(net).items()}


def _stat(fn, values: list) -> Optional[float]:
  return float(fn(values)) if values else None


def single_stats(net: dict) -> dict:
  """Full error and single-deletion errors of typical blocks (non-openers) and of stage openers."""
  typical = [r["error"] for r in net["rows"] if not r.get("opener")]
  openers = [r["error"] for r in net["rows"] if r.get("opener")]
  return {"full": net["full_error"], "typical_mean": _stat(np.mean, typical),
          "typical_max": _stat(np.max, typical), "typical_min": _stat(np.min, typical),
          "opener_mean": _stat(np.mean, openers), "all_mean": _stat(np.mean, [r["error"] for r in net["rows"]])}


def reorderings(net: dict) -> list[dict]:
  """A reorder sweep's rows whose order is not the identity. k random swaps can undo each other (a swap
  drawn twice), and such a draw is the full network, not a reordering: every reorder statistic leaves it
  out (ResNet-20's 9 blocks, one movable pair per stage: 23 of 200 draws)."""
  return [r for r in net["rows"] if r["kendall_tau"] < 1 - 1e-9]
