"""Verdicts that measure size, not only direction: each claim compares this network's effect with the paper's.

An effect is measured in points of test error over the network's own full error (or as a fraction of its
depth, for the effective paths), so networks of different depth and accuracy compare with the paper's
ResNet-110 on one scale. A verdict reads

  yes             the effect points the paper's way and its size is within the tolerance stated in RULES;
  direction only  the sign (the qualitative claim) holds, the size does not;
  **no**          the sign is contradicted;
  n/a             not measured (or the network is at chance level, where lesion claims mean nothing).

The paper's effects come from paper_numbers.json (`paper_effects`); RULES is printed in every report.

Why the bounds are what they are:
  - direction of a single deletion: the two hypotheses the paper sets against each other are "an ensemble
    loses one member" (cost near 0) and "a chain loses a link" (the plain net: error at chance). Half the
    distance from the full error to chance is the midpoint between them: a cost below it leaves the network
    nearer to intact than to broken, which is the sign of the claim, however far the size is from the paper's
    (+30 points from 13% is still "direction only"; "no" starts near +38 there).
  - size tolerances: the paper reports one network and one run, without error bars; the additive slack (1 to
    5 points) is several standard errors of an error measured on 10,000 test images (at most 0.5 points) plus
    the spread between networks trained alike, and where the paper's effect is large (k deletions, reorderings)
    half of it, so that a bound scales with what is compared.
  - one-sided sizes: where the claim is that an effect is small (a typical deletion, a reordering, stochastic
    depth), an effect smaller than the paper's, none, or an improvement, is within size; where the claim is a
    shape (error rising with k, openers costing more), the size is compared both ways.
  - a flat k-deletion curve (no deletion costs anything) contradicts "error grows with k": **no**.
  - effective paths: 0.1 n on either end is about the spread of Binomial(n, 1/2) path lengths around n/2
    (sd sqrt(n)/2: 0.07 n at n = 54), so a window within it overlaps the paper's at the same relative place.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

YES, DIRECTION, NO, NA = "yes", "direction only", "**no**", "n/a"
CHANCE = 0.9           # CIFAR-10 error of a constant guess
K_FRACTIONS = (0.1, 0.2, 0.4)   # of the deletable (non-opener) blocks; the paper's k = 5, 10, 20 of 51

RULES = [
    "Verdicts: **yes** = the effect has the paper's sign and its size is within the tolerance below; "
    "**direction only** = the sign holds, the size does not; **no** = the sign is contradicted. Effects are in "
    "points of test error over the network's own full error (the paper's: over its 6.03%).",
    "Full-network error: at most 1.5 points above the published error for this depth (He et al. 2016a; else "
    "Veit et al.'s ResNet-110). Above 50% (not trained), every lesion and path verdict reads n/a.",
    "Single deletion, typical block (non-opener): direction = the mean cost is below half the distance from the "
    "full error to chance (90%); size = mean cost at most the paper's (+0.57 points: 6.0-7.2% around 6.03%) "
    "+ 1 point, and the worst at most the paper's (+1.17) + 2 points.",
    "Single deletion, stage openers: direction = an opener costs more than a typical block (means); size = "
    "the opener cost within 5 points of the paper's (+5.97: 12%).",
    "Single deletion, plain net: direction = the plain net's mean single-deletion error exceeds the ResNet's "
    "typical one by 10 points or more; size = it is at least 80% (the paper: 90%, chance).",
    "k deleted, at 10%, 20% and 40% of the deletable blocks (the paper's k = 5, 10, 20 of 51): direction = the "
    "error never falls as k grows, ends above the full network's (a flat curve is **no**) and stays below "
    "chance at 10%; size = the cost within max(3 points, half the paper's "
    "cost) of the paper's (+4.57, +14.47, +52.97).",
    "Reordering, median error per Kendall-tau bin: direction = the tau >= 0.95 median is below the 0.90-0.95 "
    "one and both are below chance; size = the cost within max(3 points, half the paper's) of the paper's "
    "(tau >= 0.95: +1.97; 0.90-0.95: +15.97) or below it (costing less than the paper, nothing, or improving the "
    "error is resilience too). Other bins are reported only.",
    "Effective paths (90% of the gradient): direction = the window's upper end is at most n/2; size = both "
    "ends within 0.1 n of the paper's 5/54 and 17/54 of the depth. Their share of all paths: direction = "
    "below 50%; its size is not compared (a binomial window's share shrinks with n).",
    "One path's gradient decays exponentially with its length: direction = a line through log10(magnitude "
    "at the input image) over k = 0..n falls (factor per block below 1); size = it fits with r^2 >= 0.9 (the "
    "paper states no rate).",
    "Short-path training (either reading): yes if its full error is within 1 point of the normally trained "
    "network's (the paper: -0.14 points); for the forward reading with the better test-time treatment "
    "(branches unscaled or scaled by K/n); **no** otherwise.",
    "Stochastic depth: direction = its mean typical single-deletion cost is below the normally trained "
    "network's; size = at most the paper's SD cost (+0.32: 5.1-5.8% around 5.13%) + 1 point.",
]


def paper_effects(numbers: dict) -> dict:
  """The paper's effects (points over its full error, or fractions of its depth) from paper_numbers.json."""
  le, pn, sd = numbers["lesion"], numbers["paths"], numbers["stochastic_depth"]
  full = le["full_error"]
  lo, hi = le["single_deletion_typical_range"]
  k_errors = {int(k): v for k, v in le["k_deleted_mean_error"].items()}
  return {"full": full,
          "typical_mean_cost": (lo + hi) / 2 - full, "typical_worst_cost": hi - full,
          "opener_cost": le["single_deletion_stage_opener"] - full,
          "k_cost": {f: k_errors[k] - full for f, k in zip(K_FRACTIONS, sorted(k_errors))},
          "tau_cost": {b: v - full for b, v in le["reorder_median_error_by_tau"].items()},
          "window": [x / pn["num_blocks"] for x in pn["effective_path_lengths"]],
          "window_share": pn.get("effective_share_of_paths"),
          "sd_cost": float(np.mean(sd["veit_sd_single_deletion_range"])) - sd["veit_sd_network_error"]}


def verdict(direction: Optional[bool], size: Optional[bool] = None, untrained: bool = False) -> str:
  if direction is None or untrained:
    return NA + (" (ResNet not trained: full error > 50%)" if untrained and direction is not None else "")
  if not direction:
    return NO
  return YES if size else DIRECTION


def points(cost: Optional[float]) -> str:
  """A cost (fraction of images) as signed points."""
  return NA if cost is None else f"{100 * cost:+.2f} pts"


def within(cost: float, paper_points: float, floor: float = 3.0, at_most: bool = False) -> bool:
  """`cost` (fraction) within max(floor points, half the paper's cost) of the paper's cost (points); with
  `at_most`, anything below the paper's cost counts as within too (a claim that the effect is small)."""
  slack = max(floor, abs(paper_points) / 2)
  return 100 * cost <= paper_points + slack if at_most else abs(100 * cost - paper_points) <= slack


def k_at_fractions(deletable: int, available: list[int]) -> dict[float, Optional[int]]:
  """The k nearest each fraction of the deletable blocks (at least 1), if that k was swept."""
  out = {}
  for f in K_FRACTIONS:
    k = max(1, int(round(f * deletable)))
    out[f] = k if k in available else None
  return out


def single_typical(full: float, mean: Optional[float], worst: Optional[float], paper: dict,
                   untrained: bool = False) -> str:
  if mean is None:
    return verdict(None)
  cost, worst_cost = mean - full, worst - full
  # size one-sided (a deletion cheaper than the paper's is resilience too); direction: nearer intact than chance
  size = (100 * cost <= paper["typical_mean_cost"] + 1.0 and 100 * worst_cost <= paper["typical_worst_cost"] + 2.0)
  return verdict(cost < (CHANCE - full) / 2, size, untrained)


def single_opener(full: float, opener: Optional[float], typical: Optional[float], paper: dict,
                  untrained: bool = False) -> str:
  if opener is None or typical is None:
    return verdict(None)
  return verdict(opener > typical, abs(100 * (opener - full) - paper["opener_cost"]) <= 5.0, untrained)


def plain_single(plain_mean: Optional[float], resnet_typical: Optional[float], untrained: bool = False) -> str:
  if plain_mean is None or resnet_typical is None:
    return verdict(None)
  return verdict(plain_mean >= resnet_typical + 0.10, plain_mean >= 0.8, untrained)


def k_deleted(full: float, errors: dict[float, Optional[float]], paper: dict, untrained: bool = False
              ) -> dict[float, str]:
  """errors: fraction -> mean error at that fraction's k (None: not swept)."""
  seen = [errors[f] for f in sorted(errors) if errors[f] is not None]
  curve = [full] + seen  # from no deletion on: never falls, and ends higher (a flat curve does not grow)
  rising = all(b >= a for a, b in zip(curve, curve[1:])) and curve[-1] > full
  first = errors.get(K_FRACTIONS[0])
  out = {}
  for f, e in errors.items():
    direction = None if e is None else rising and (first is None or first < CHANCE)
    out[f] = verdict(direction, None if e is None else within(e - full, paper["k_cost"][f]), untrained)
  return out


def reorder(full: float, medians: dict[str, Optional[float]], paper: dict, untrained: bool = False
            ) -> dict[str, str]:
  near, mid = medians.get("tau>=0.95"), medians.get("0.90<=tau<0.95")
  direction = None if near is None else (near < CHANCE and (mid is None or (near <= mid and mid < CHANCE)))
  return {b: verdict(None if medians.get(b) is None else direction,
                     None if medians.get(b) is None else within(medians[b] - full, paper["tau_cost"][b],
                                                                at_most=True),
                     untrained)
          for b in ("tau>=0.95", "0.90<=tau<0.95")}


def window(lo: int, hi: int, n: int, paper: dict, untrained: bool = False) -> str:
  size = abs(lo / n - paper["window"][0]) <= 0.1 and abs(hi / n - paper["window"][1]) <= 0.1
  return verdict(hi <= n / 2, size, untrained)


def sd_resilience(sd_cost: Optional[float], normal_cost: Optional[float], paper: dict,
                  untrained: bool = False) -> str:
  if sd_cost is None or normal_cost is None:
    return verdict(None)
  return verdict(sd_cost < normal_cost, 100 * sd_cost <= paper["sd_cost"] + 1.0, untrained)
