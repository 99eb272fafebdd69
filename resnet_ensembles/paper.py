"""The paper's (and its references') published numbers, read from the one cited data file."""
from __future__ import annotations

import functools
import json
import os
from typing import Optional

_PATH = os.path.join(os.path.dirname(__file__), "paper_numbers.json")


@functools.lru_cache(maxsize=None)
def numbers() -> dict:
  """The whole table; entries name their source in `numbers()["sources"]`."""
  with open(_PATH) as f:
    return json.load(f)


def paths_window() -> dict:
  """The paper's effective-path window: {"num_blocks", "lo", "hi", "path_fraction"}."""
  p = numbers()["paths"]
  lo, hi = p["effective_path_lengths"]
  return dict(num_blocks=p["num_blocks"], lo=lo, hi=hi, path_fraction=p["effective_share_of_paths"])


def lesion_overlays(num_blocks: int, plain_blocks: Optional[int] = None) -> dict:
  """{sweep: {network label: {"x", "y" (percent)}}}: the paper's ResNet-110 lesion results to draw over a
  sweep's figure (plots/lesion.py); single-deletion levels span this run's blocks."""
  le = numbers()["lesion"]
  ks = sorted((int(k), v) for k, v in le["k_deleted_mean_error"].items())
  lo, hi = le["single_deletion_typical_range"]
  tau = le["reorder_median_error_by_tau"]
  return {
      "single": {"ResNet": {"x": [1, num_blocks], "y": [(lo + hi) / 2] * 2},
                 "plain": {"x": [1, plain_blocks or num_blocks], "y": [le["plain_single_deletion"]] * 2}},
      "multi": {"ResNet": {"x": [k for k, _ in ks], "y": [v for _, v in ks]}},
      "reorder": {"ResNet": {"x": [0.975, 0.925], "y": [tau["tau>=0.95"], tau["0.90<=tau<0.95"]]}},
  }


def variant_overlays(num_blocks: int) -> dict:
  """Fig. 8 overlays: Veit et al.'s stochastic-depth ResNet-110 single-deletion range (its mean, across
  this run's blocks) and their normally trained ResNet-110's k-deletion curve."""
  le, sd = numbers()["lesion"], numbers()["stochastic_depth"]
  lo, hi = sd["veit_sd_single_deletion_range"]
  ks = sorted((int(k), v) for k, v in le["k_deleted_mean_error"].items())
  return {"single": {"x": [1, num_blocks], "y": [(lo + hi) / 2] * 2,
                     "label": f"paper: stochastic depth, one block deleted ({lo:g}-{hi:g}%)"},
          "multi": {"x": [k for k, _ in ks], "y": [v for _, v in ks], "label": "paper: normal ResNet-110"}}
