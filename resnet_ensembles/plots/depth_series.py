"""The depth series figure: each effect the paper reports against the number of blocks n, one panel per
effect, stored (solid), recalibrated from the lesion on (dashed) and all re-estimated (dash-dot) BatchNorm, the fitted trend, and the paper's ResNet-110
(n = 54) as a marked point; the project's own pre-activation networks (one recipe: ResNet-32 and, once measured,
ResNet-110 at n = 54) as open squares joined by a line. A pure function of the summary JSON `study.series.summarize` writes."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from resnet_ensembles.plots import PAPER_STYLE, legend_below, save_figure

PANELS = (("typical_mean_cost", "typical single deletion:\nmean cost (points)", 100),
          ("opener_cost", "stage opener deletion:\ncost (points)", 100),
          ("k_share_0.2", "20% of deletable blocks deleted: % of\nthe way from full error to chance", 100),
          ("reorder_cost", "reorderings, tau >= 0.95:\nmedian cost (points)", 100),
          ("window_hi_frac", "effective window's upper\nend / n", 1),
          ("decay", "gradient decay\nper block", 1))


def _value(s: dict, metric: str):
  if not s.get("n"):
    return None
  if metric == "k_share_0.2":
    return ((s.get("k") or {}).get("0.2") or {}).get("share")
  if metric == "reorder_cost":
    return (s.get("reorder") or {}).get("tau>=0.95_cost")
  if metric in ("window_hi_frac", "decay"):
    p = s.get("paths")
    return None if not p else (p["hi"] / p["n"] if metric == "window_hi_frac" else p["decay"])
  return s.get(metric)


# per BatchNorm treatment: line style, colour of the imported networks, colour of the own network
BN_STYLES = {"stored": ("-", "C0", "C2"), "recalibrate": ("--", "C1", "C3"), "recalibrate_all": ("-.", "C4", "C5")}


def figure(summary: dict, labels: dict[str, str]) -> Figure:
  fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
  bns = list(next(iter(summary["networks"].values())))
  for ax, (metric, title, scale) in zip(axes.flat, PANELS):
    for bn in bns:
      style, color, own_color = BN_STYLES.get(bn, ("-.", "C5", "C6"))
      pts = [(s[bn]["n"], _value(s[bn], metric)) for name, s in summary["networks"].items()
             if name in summary["fit_networks"] and _value(s[bn], metric) is not None]
      if pts:
        ns, ys = zip(*sorted(pts))
        ax.plot(ns, scale * np.asarray(ys), "o" + style, color=color,
                label=f"imported + fine-tuned ({bn} BN)")
      f = summary["fits"][bn].get(metric)
      if f:
        ax.plot(f["curve"]["n"], scale * np.asarray(f["curve"]["y"]), ":", color=color,
                linewidth=1)
      own = sorted((s[bn]["n"], _value(s[bn], metric)) for name, s in summary["networks"].items()
                   if name not in summary["fit_networks"] and _value(s[bn], metric) is not None)
      if own:  # the project's own pre-act networks (one recipe: ResNet-32, and ResNet-110 once measured)
        ns, ys = zip(*own)
        ax.plot(ns, scale * np.asarray(ys), "s" + style, mfc="none", color=own_color, linewidth=0.8,
                label=f"own pre-act, one recipe ({bn} BN)")
    paper_y = summary.get("paper_points", {}).get(metric)
    if paper_y is not None:
      ax.plot([54], [scale * paper_y], linestyle="none", marker=PAPER_STYLE["marker"],
              color=PAPER_STYLE["color"], markersize=9, label=PAPER_STYLE["label"])
    if metric == "decay":  # the paper's gradient decays with path length (a factor below 1); above 1 it grows
      ax.axhline(1.0, color="0.6", linewidth=0.8, linestyle=":")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("residual blocks n")
  legend_below(axes.flat[4], ncol=2)
  fig.suptitle("Depth series: CIFAR-10 (JPEG q75 copy), effects over each deployed network's error (stored statistics); dotted: fitted trends")
  fig.tight_layout()
  return fig


def save(summary: dict, labels: dict[str, str], path: str) -> str:
  return save_figure(figure(summary, labels), path)
