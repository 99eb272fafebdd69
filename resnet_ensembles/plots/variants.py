"""Fig. 8: lesion resilience of differently trained networks on the same axes.

Pure functions of the lesion JSONs (`experiments/lesion.py` output): one single-deletion result and one
k-deletion result per training variant (normal, stochastic depth, short-path ...)."""
from __future__ import annotations

from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from resnet_ensembles import paper as paper_lib
from resnet_ensembles.lesion.summary import errors_by_k, k_means, single_stats
from resnet_ensembles.plots import PAPER_STYLE, legend_below, save_figure


def _first_net(result: dict) -> dict:
  return result["networks"][0]  # the ResNet (a plain net, if swept alongside, comes second)


def summarize(single: dict, multi: dict, ks=(1, 5, 10, 20)) -> dict:
  """Full error, mean single-deletion error (non-openers / openers) and mean error at a few k."""
  s, km = single_stats(_first_net(single)), k_means(_first_net(multi))
  return {"full_error": s["full"], "single_mean_error": s["typical_mean"],
          "single_opener_mean_error": s["opener_mean"], "k_mean_error": {k: km[k] for k in ks if k in km}}


def figure(variants: dict[str, tuple[dict, dict]], paper: Optional[dict] = None) -> Figure:
  """variants: label -> (single-deletion JSON, k-deletion JSON); paper: {"single", "multi"} ->
  {"x", "y" (percent), "label"} drawn in PAPER_STYLE (default: paper.variant_overlays())."""
  if paper is None:
    nets = [_first_net(single) for single, _ in variants.values()]
    paper = paper_lib.variant_overlays(max(len(n["rows"]) for n in nets))  # one row per deleted block
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for label, (single, multi) in variants.items():
    s = _first_net(single)
    blocks = np.array([r["deleted"] for r in s["rows"]]) + 1
    line, = ax1.plot(blocks, [100 * r["error"] for r in s["rows"]], marker=".", label=label)
    ax1.axhline(100 * s["full_error"], color=line.get_color(), ls=":", lw=1)
    by_k = errors_by_k(_first_net(multi))
    ks = sorted(by_k)
    mean, std = (100 * np.array([f(by_k[k]) for k in ks]) for f in (np.mean, np.std))
    ax2.plot(ks, mean, marker=".", color=line.get_color(), label=label)
    ax2.fill_between(ks, mean - std, mean + std, color=line.get_color(), alpha=0.15)
  for ax, key in ((ax1, "single"), (ax2, "multi")):
    if paper.get(key):
      ax.plot(paper[key]["x"], paper[key]["y"], **dict(PAPER_STYLE, label=paper[key]["label"]))
  ax1.set(xlabel="deleted block", ylabel="test error (%)", title="one block deleted (dotted: full network)")
  ax2.set(xlabel="number of deleted blocks k", ylabel="test error (%)", title="k random blocks deleted (mean ± std)")
  for ax in (ax1, ax2):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # blocks and block counts
    ax.grid(alpha=0.3)
    legend_below(ax, ncol=2)
  fig.tight_layout()
  return fig


def save(variants: dict[str, tuple[dict, dict]], path: str, paper: Optional[dict] = None) -> str:
  return save_figure(figure(variants, paper), path, dpi=120)
