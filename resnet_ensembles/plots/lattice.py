"""Figures of the lesion lattice study, pure functions of its JSON (one dict per network)."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def shapley_vs_cost(results: list[dict], path: str) -> None:
  """Each branch's Shapley value against its single-deletion cost, in loss (nats) and in error (points)."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
  panels = ((axes[0], "loss", "nats", 1.0), (axes[1], "error", "points of error or disagreement", 100.0))
  for ax, metric, unit, scale in panels:
    lo, hi = 0.0, 0.0
    for r in results:
      cost, phi = scale * np.asarray(r[metric]["single_cost"]), scale * np.asarray(r[metric]["shapley"])
      se = r[metric].get("shapley_se")
      other = metric == "error" and r.get("error_metric", "error") != "error"   # a language model's disagreement
      ax.errorbar(cost, phi, yerr=None if se is None else scale * np.asarray(se), fmt="s" if other else "o", ms=4,
                  capsize=2, label=r["label"] + (f" ({r['error_metric']})" if other else ""))
      lo, hi = min(lo, cost.min(), phi.min()), max(hi, cost.max(), phi.max())
    ax.plot([lo, hi], [lo, hi], ":", color="grey", lw=1, label="Shapley = cost")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel(f"single-deletion cost ({unit})")
    if metric == "error":
      ax.legend(fontsize=7)
    ax.set_ylabel(f"Shapley value ({unit} removed)")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def additivity_vs_n(results: list[dict], path: str) -> None:
  """Share of the lattice's variance (loss) explained by single-branch effects, and with pairwise terms."""
  fig, ax = plt.subplots(figsize=(5, 4))
  for i, r in enumerate(results):
    add = r["loss"].get("additivity")
    if not add:
      continue
    k = len(r["positions"]) + 0.08 * (i - (len(results) - 1) / 2)   # side by side where sizes coincide
    ax.plot([k, k], [add["first_order"], add["up_to_pairwise"]], "-", color="grey", lw=1)
    ax.plot(k, add["first_order"], "o", label=f"{r['label']}: additive")
    ax.plot(k, add["up_to_pairwise"], "^", color=ax.lines[-1].get_color())
  ax.set_xlabel("branches in the lattice (n)")
  ax.set_ylabel("share of the lattice's loss variance")
  ax.set_ylim(0, 1.02)
  ax.set_title("o additive model, ^ with pairwise terms", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def pruning_curves(results: list[dict], path: str) -> None:
  """Loss against the number of branches deleted, by oracle, greedy, Shapley and each score."""
  lat = [r for r in results if "pruning" in r]
  if not lat:
    return
  fig, axes = plt.subplots(1, len(lat), figsize=(4.2 * len(lat), 3.8), squeeze=False)
  for ax, r in zip(axes[0], lat):
    others = iter(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive"])
    for name, curve in r["pruning"]["curves"].items():
      y = np.array([np.nan if c is None else c for c in curve], float)
      style = {"oracle": dict(color="k", lw=2.5), "greedy": dict(color="k", ls="--"),
               "shapley": dict(color="tab:red", lw=2)}.get(name) or dict(color=next(others, "grey"), lw=1)
      ax.plot(np.arange(len(y)), y, marker=".", label=name, **style)
    ax.set_yscale("log")
    ax.set_title(r["label"], fontsize=9)
    ax.set_xlabel("branches deleted")
  axes[0][0].set_ylabel("loss (nats)")
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def draw_all(results: list[dict], out_dir: str) -> None:
  if not results:
    return
  shapley_vs_cost(results, os.path.join(out_dir, "shapley_vs_cost.png"))
  additivity_vs_n(results, os.path.join(out_dir, "additivity.png"))
  pruning_curves(results, os.path.join(out_dir, "pruning.png"))
