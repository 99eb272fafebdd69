"""Fig. 6 of Veit et al. (path lengths and the gradient they carry), a pure function of paths.json.

The paper's ResNet-110 result (effective paths of length 5-17 of 54, 0.45% of all paths) is drawn in
PAPER_STYLE on panel (c): at its lengths when the network also has 54 blocks, else as a note.
"""
from __future__ import annotations

from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from resnet_ensembles import paper as paper_lib
from resnet_ensembles.paths import analysis as paths_lib
from resnet_ensembles.plots import PAPER_STYLE, legend_below, save_figure

WHERE = {"image": ("input image", "tab:blue"), "block0": ("input of block 1", "tab:green")}


def _positive(y) -> np.ndarray:
  y = np.asarray(y, float)
  return np.where(y > 0, y, np.nan)  # log axes: a zero (e.g. an underflowed frequency) is left out


def figure(result: dict, paper: Optional[dict] = None) -> Figure:
  """`paper`: the published window (default: paper.paths_window(), from paper_numbers.json)."""
  paper = paper_lib.paths_window() if paper is None else paper
  n = result["num_blocks"]
  k = np.arange(n + 1)
  dist, s, e = result["distribution"], result["sampled"], result["exact"]
  fig, axes = plt.subplots(1, 4, figsize=(20, 4.8))

  ax = axes[0]
  ax.bar(k, dist["frequency"], width=0.8, color="tab:blue")
  ax.set(title=f"(a) path lengths of {n} blocks", xlabel="path length k", ylabel="fraction of the 2^n paths")

  ax = axes[1]
  for w, (label, color) in WHERE.items():
    mean, std = np.asarray(s[f"{w}_mean"]), np.asarray(s[f"{w}_std"])
    ax.plot(k, _positive(mean), "o-", ms=3, color=color, label=f"at the {label}")
    ax.fill_between(k, _positive(mean - std), _positive(mean + std), color=color, alpha=0.15, lw=0)
  fit = paths_lib.exponential_fit(s["image_mean"])  # from the JSON: older paths.json files lack "decay"
  ax.plot(k, 10 ** (fit["log10_intercept"] + np.log10(fit["factor_per_block"]) * k), "--", color="tab:blue", lw=1,
          label=f"exponential fit (input image): x{fit['factor_per_block']:.3g} per block, r² {fit['r2']:.3f}")
  ax.set_yscale("log")
  ax.set(title=f"(b) gradient of one path ({s['samples_per_length']} samples / length)",
         xlabel="path length k", ylabel="gradient magnitude (mean ± std)")
  legend_below(ax, fontsize=7)

  ax = axes[2]
  total, rng = np.asarray(result["total"]["image"]), result["effective_range"]["image"]
  ax.plot(k, total, "o-", ms=3, color="tab:blue", label="frequency × magnitude (input image)")
  ax.axvspan(rng["lo"] - 0.5, rng["hi"] + 0.5, color="tab:blue", alpha=0.15,
             label=f"effective paths {rng['lo']}-{rng['hi']}: {100 * rng['carried']:.0f}% of the total, "
                   f"{100 * rng['path_fraction']:.2g}% of paths")
  if paper and paper["num_blocks"] == n:
    style = {key: v for key, v in PAPER_STYLE.items() if key != "marker"}
    ax.axvline(paper["lo"] - 0.5, **style)
    ax.axvline(paper["hi"] + 0.5, **dict(style, label=None))  # one legend entry for the pair
  elif paper:
    ax.plot([], [], " ", label=f"paper (ResNet-110, {paper['num_blocks']} blocks): effective paths "
            f"{paper['lo']}-{paper['hi']}, {100 * paper['path_fraction']:.2f}% of paths")
  ax.set(title="(c) total gradient magnitude per length", xlabel="path length k", ylabel="total gradient magnitude")
  legend_below(ax, fontsize=7)

  ax = axes[3]
  for w, (label, color) in WHERE.items():
    ax.plot(k, _positive(e[w]), "o-", ms=3, color=color, label=f"||G_k|| at the {label}")
  bound = np.asarray(dist["counts"], float) * np.asarray(s["image_mean"])
  ax.plot(k, _positive(bound), ":", color="tab:blue", label="C(n,k) × one-path magnitude (no cancellation)")
  ax.set_yscale("log")
  ax.set(title="(d) exact decomposition: all length-k paths", xlabel="path length k",
         ylabel=f"||G_k||  (sum_k G_k = gradient, err {e['sum_error']:.0e})")
  legend_below(ax, fontsize=7)
  fig.tight_layout()
  return fig


def save(result: dict, path: str, paper: Optional[dict] = None) -> str:
  return save_figure(figure(result, paper), path)
