"""The lattice study's tables, drawn from its JSON: one per network (per branch: Shapley value, single-deletion
cost, each score) and one across families (additive shares, each score's Spearman rho with cost and Shapley)."""
from __future__ import annotations

import os

import numpy as np

from resnet_ensembles.lesion import scores

SCORE_NAMES = {"block_influence": "Block Influence", "angular": "angular distance", "norm_ratio": "branch/stream norm",
               "lens_drop": "logit-lens drop", "refinement": "refinement cos",
               "angular_span": "least-distance span (Gromov)"}   # no "|": the names go into Markdown tables


def _f(x, digits=3):
  return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def network_table(r: dict) -> str:
  """Markdown: one row per branch of the lattice (or every block when sampled)."""
  sampled = r["mode"] == "sampled"
  head = ["block", "Shapley, loss (nats)", "Shapley, error (pts)", "single deletion, loss",
          "single deletion, error (pts)"]
  head += [SCORE_NAMES[s] for s in scores.SCORES]
  lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
  for j, block in enumerate(r["positions"]):
    loss, err = r["loss"], r["error"]
    phi = _f(loss["shapley"][j]) + (f" ± {loss['shapley_se'][j]:.3f}" if sampled else "")
    phi_e = f"{100 * err['shapley'][j]:.2f}" + (f" ± {100 * err['shapley_se'][j]:.2f}" if sampled else "")
    opener = "*" if block in r["stage_openers"] else ""
    row = [f"{block}{opener}", phi, phi_e, _f(loss["single_cost"][j]), f"{100 * err['single_cost'][j]:+.2f}"]
    row += [_f(r["scores"][s][j]) for s in scores.SCORES]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def _rho(c: dict) -> str:
  return f"{c['rho']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}]"


def cross_table(results: list[dict]) -> str:
  """Markdown: per network and metric (loss, error), the additive shares and each score's Spearman rho with
  the single-deletion cost, then the score that follows the Shapley values best."""
  head = ["network", "branches", "metric", "full", "additive share", "+ pairwise"]
  head += [f"{SCORE_NAMES[s]}: rho with cost" for s in scores.SCORES] + ["best rho with Shapley"]
  lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
  for r in results:
    lat = f"{len(r['positions'])} of {r['num_blocks']}" + (" (sampled)" if r["mode"] == "sampled" else "")
    for metric, field in (("loss", "correlations"), ("error", "correlations_error")):
      d, corr = r[metric], r.get(field)
      add = d.get("additivity")
      full = f"{d['full']:.3f} nats" if metric == "loss" else f"{100 * d['full']:.2f}%"
      shown = r.get("error_metric", "error") if metric == "error" else metric
      row = [r["label"], lat, shown, full, _f(add["first_order"]) if add else "n/a",
             _f(add["up_to_pairwise"]) if add else "n/a"]
      if corr is None:
        lines.append("| " + " | ".join(row + ["n/a"] * (len(scores.SCORES) + 1)) + " |")
        continue
      row += [_rho(corr["single_cost"][s]) for s in scores.SCORES]
      best = max(scores.SCORES, key=lambda s: np.nan_to_num(corr["shapley"][s]["rho"], nan=-9))
      row.append(f"{SCORE_NAMES[best]}: {_rho(corr['shapley'][best])}")
      lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def pruning_table(r: dict) -> str:
  """Markdown: loss after d deletions of the lattice's branches, by each choice."""
  curves = r["pruning"]["curves"]
  k = len(r["positions"])
  head = ["choice"] + [f"d={d}" for d in range(k + 1)]
  lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (k + 1)]
  for name, curve in curves.items():
    lines.append("| " + " | ".join([SCORE_NAMES.get(name, name)] + [_f(x) for x in curve]) + " |")
  return "\n".join(lines)


def write_tables(results: list[dict], out_dir: str) -> str:
  """`<out_dir>/tables.md`: the cross-family table, then each network's branches and pruning curves."""
  parts = ["# Lesion lattice tables", "", "Loss: mean cross-entropy (nats) on the evaluation subset; error in "
           "points; Shapley values share out the loss (error) the branches remove, L(none kept) - L(full). "
           "Openers are marked *. Spearman rho over the lattice's branches, 95% bootstrap intervals. For a "
           "language model the loss is nats/token and the second metric the disagreement with the intact model's "
           "top-1 next token.", "",
           "## Across families", "", cross_table(results), ""]
  for r in results:
    data = (f"{r['test_images']} test images" if r.get("tokens") is None else
            f"{r['windows']} windows of {r['window']} tokens ({r['tokens']} predicted tokens); loss in nats/token, "
            f"\"error\" columns: disagreement with the intact model's top-1 next token (1 - agreement)")
    parts += [f"## {r['label']}", "", f"{data}; mode {r['mode']}; commit {r['commit']}.", "", network_table(r), ""]
    if "pruning" in r:
      parts += ["Loss after deleting d of the lattice's branches (oracle: the best d-subset in the lattice):", "",
                pruning_table(r), ""]
  text = "\n".join(parts)
  with open(os.path.join(out_dir, "tables.md"), "w") as f:
    f.write(text)
  return text
