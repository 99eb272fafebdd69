"""Figures of the lesion study (Veit et al. Figs. 3, 5a, 5b), each a pure function of the sweep's JSON.

`paper` arguments take the paper's values ({"x": [...], "y": [...]} per network label) to overlay in
PAPER_STYLE, so a reproduction and its target share one axis.
"""
from __future__ import annotations

from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from resnet_ensembles import paper as paper_lib
from resnet_ensembles.lesion.summary import errors_by_k
from resnet_ensembles.plots import PAPER_STYLE, legend_below, save_figure

COLORS = {"ResNet": "tab:blue", "plain": "tab:orange"}


def _color(label: str) -> str:
  return COLORS.get(label, "tab:green")


def _bn(result: dict) -> str:
  return {"recalibrate": "recalibrated"}.get(result["bn"], result["bn"])


def _overlay(ax, paper: Optional[dict], label: str) -> None:
  """The paper's values for this network (y in percent), if given."""
  if paper and label in paper:
    ax.plot(paper[label]["x"], paper[label]["y"], **PAPER_STYLE)


def single_figure(result: dict, paper: Optional[dict] = None) -> Figure:
  """Fig. 3: test error when each block is deleted, one panel per network, full network as a line."""
  nets = result["networks"]
  fig, axes = plt.subplots(1, len(nets), figsize=(5.5 * len(nets), 3.8), squeeze=False, sharey=True)
  for ax, net in zip(axes[0], nets):
    blocks = np.array([r["deleted"] for r in net["rows"]]) + 1  # the paper numbers blocks from 1
    errors = 100 * np.array([r["error"] for r in net["rows"]])
    openers = np.isin(blocks - 1, net["stage_openers"])
    ax.plot(blocks, errors, "o-", ms=3.5, color=_color(net["label"]), label=f"{net['label']}: one block deleted")
    ax.plot(blocks[openers], errors[openers], "s", mfc="none", ms=8, color="k", label="downsampling / stage opener")
    ax.axhline(100 * net["full_error"], ls="--", color="0.3", label=f"full network ({100 * net['full_error']:.1f}%)")
    _overlay(ax, paper, net["label"])
    ax.set(title=f"{net['label']} (depth {net['model']['depth']})", xlabel="dropped layer index",
           ylim=(0, 100))
    legend_below(ax, ncol=2)
  axes[0][0].set_ylabel("test error (%)")
  fig.suptitle(f"Deleting individual layers ({_bn(result)} BN statistics, {result['test_images']} test images)")
  fig.tight_layout()
  return fig


def multi_figure(result: dict, paper: Optional[dict] = None) -> Figure:
  """Fig. 5a: error vs number of deleted blocks, mean +- one standard deviation over random sets."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for net in result["networks"]:
    by_k = errors_by_k(net)
    x = np.array(list(by_k))
    mean, std = (100 * np.array([f(v) for v in by_k.values()]) for f in (np.mean, np.std))
    x, mean, std = np.r_[0, x], np.r_[100 * net["full_error"], mean], np.r_[0, std]
    c = _color(net["label"])
    ax.plot(x, mean, "o-", ms=3.5, color=c, label=f"{net['label']} (mean)")
    ax.fill_between(x, mean - std, mean + std, color=c, alpha=0.25, lw=0, label="± 1 std")
    _overlay(ax, paper, net["label"])
  ax.set(xlabel="number of layers deleted", ylabel="test error (%)", ylim=(0, 100),
         title=f"Deleting random sets of layers ({_bn(result)} BN)")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # k counts blocks
  legend_below(ax)
  fig.tight_layout()
  return fig


def reorder_figure(result: dict, paper: Optional[dict] = None) -> Figure:
  """Fig. 5b: error vs Kendall tau of random within-stage reorderings (mean per swap count as a line)."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for net in result["networks"]:
    taus = np.array([r["kendall_tau"] for r in net["rows"]])
    errors = 100 * np.array([r["error"] for r in net["rows"]])
    swaps = np.array([r["swaps"] for r in net["rows"]])
    c = _color(net["label"])
    ax.scatter(taus, errors, s=8, alpha=0.5, color=c, label=f"{net['label']}: one reordering")
    means = sorted((taus[swaps == k].mean(), errors[swaps == k].mean()) for k in np.unique(swaps))
    ax.plot(*zip(*means), "-", color=c, label=f"{net['label']}: mean per number of swaps")
    ax.plot([1.0], [100 * net["full_error"]], "*", ms=12, color=c, mec="k", label=f"{net['label']}: original order")
    _overlay(ax, paper, net["label"])
  ax.set(xlabel="Kendall tau", ylabel="test error (%)", ylim=(0, 100),
         title=f"Reordering layers ({_bn(result)} BN)")
  ax.invert_xaxis()  # more reordering to the right, as in the paper
  legend_below(ax)
  fig.tight_layout()
  return fig


FIGURES = {"single": single_figure, "multi": multi_figure, "reorder": reorder_figure}


def figure(result: dict, paper: Optional[dict] = None) -> Figure:
  if result.get("sweep") not in FIGURES:
    raise ValueError(f"sweep must be one of {sorted(FIGURES)}, got {result.get('sweep')!r}")
  return FIGURES[result["sweep"]](result, paper)


def paper_overlay(result: dict) -> Optional[dict]:
  """The paper's values for this sweep, or None: Veit et al. report them for normally trained networks only,
  so a stochastic-depth or short-path network (its `train_mask`) gets no overlay."""
  nets = {net["label"]: net for net in result["networks"]}
  if "ResNet" not in nets or (nets["ResNet"].get("train_mask") or {}).get("kind", "none") != "none":
    return None
  plain = nets["plain"]["num_blocks"] if "plain" in nets else None
  return paper_lib.lesion_overlays(nets["ResNet"]["num_blocks"], plain)[result["sweep"]]


def save(result: dict, path: str, paper: Optional[dict] = None) -> str:
  return save_figure(figure(result, paper), path)
