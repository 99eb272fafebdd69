"""The ViT-vs-ResNet figure: single-deletion cost by relative depth, k-deletion cost by fraction of
branches, reorder cost by Kendall tau, the ViT's Sun et al. layer lesions by span length, and the gradient
by path length. A pure function of `study.vit_comparison.summarize`'s dict."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from resnet_ensembles.plots import legend_below, save_figure

COLORS = {"vit": "C0", "resnet": "C3"}


def figure(summary: dict, labels: dict[str, str]) -> Figure:
  fig, axes = plt.subplots(1, 5, figsize=(19, 3.9))
  ax_single, ax_k, ax_tau, ax_painters, ax_paths = axes
  for key in ("vit", "resnet"):
    s, c, name = summary[key], COLORS[key], labels.get(key, key)
    if not s.get("n"):
      continue
    pts = s["single"]
    if key == "vit":  # attention at even positions, MLP at odd ones
      for kind, marker, parity in (("attention", "o", 0), ("MLP", "s", 1)):
        sel = [r for r in pts if r["block"] % 2 == parity]
        ax_single.plot([r["position"] for r in sel], [100 * r["cost"] for r in sel], marker, color=c,
                       mfc="none" if parity else c, label=f"{name}: {kind} sublayer")
    else:
      ax_single.plot([r["position"] for r in pts], [100 * r["cost"] for r in pts], "x", color=c,
                     label=f"{name}: block")
    if s.get("k"):
      ax_k.errorbar([e["fraction"] for e in s["k"]], [100 * e["cost"] for e in s["k"]],
                    yerr=[100 * (e["se"] or 0) for e in s["k"]], color=c, marker=".", label=name)
    if s.get("reorder"):
      ax_tau.plot([r["tau"] for r in s["reorder"]], [100 * r["cost"] for r in s["reorder"]], ".", color=c,
                  alpha=0.5, label=name)
    if s.get("paths"):
      g = s["paths"]["gradient_by_length"]
      ax_paths.semilogy(np.arange(len(g)) / (len(g) - 1), g, "-", color=c, label=name)
  layer_cost = summary["painters"].get("layer_cost")
  if layer_cost:
    depth = len(layer_cost)
    ax_single.plot((np.arange(depth) + 0.5) / depth, 100 * np.asarray(layer_cost), "-", color=COLORS["vit"],
                   alpha=0.6, label=f"{labels.get('vit', 'vit')}: whole layer")
  for variant, by_n in (summary["painters"].get("variants") or {}).items():
    if by_n:
      ns = sorted(int(n) for n in by_n)
      ax_painters.plot(ns, [100 * by_n[str(n)]["cost"] for n in ns], "o-", label=variant)
  ax_single.set(xlabel="relative depth of the deleted branch", ylabel="cost (points over the full network)")
  ax_k.set(xlabel="fraction of deletable branches deleted", ylabel="cost (points)")
  ax_tau.set(xlabel="Kendall tau of the order (ViT: over layers)", ylabel="cost (points)")
  ax_painters.set(xlabel="middle layers in the span (N)", ylabel="cost (points)",
                  title="ViT: Sun et al.'s layer lesions", )
  ax_paths.set(xlabel="path length / n", ylabel="gradient magnitude / its maximum")
  for ax in axes:
    ax.grid(alpha=0.3)
  for ax in (ax_single, ax_painters):
    legend_below(ax)
  legend_below(ax_k)
  fig.suptitle("ViT vs ResNet residual streams, CIFAR-10 (JPEG q75 copy)")
  fig.tight_layout()
  return fig


def save(summary: dict, labels: dict[str, str], path: str) -> str:
  return save_figure(figure(summary, labels), path)
