"""Per-example path usage (experiments/path_usage.py), a pure function of per_example.json.

Top row: (a) where each image's effective window starts and ends, and its peak length; (b) window widths
and the mean path length of correctly and wrongly classified images; (c) peak and mean length against the
image's loss decile; (d) the lesion link: single-deletion flips against the mean path length.
Below: the test images whose profiles sit furthest toward long paths, and the furthest toward short ones.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from resnet_ensembles.paths.per_example_report import image_from_json
from resnet_ensembles.plots import legend_below, save_figure


def figure(result: dict) -> Figure:
  w, n = result["which_headline"], result["num_blocks"]
  d, groups, link = result["distribution"][w], result["groups"][w], result["lesion_link"][w]
  per = result["per_image"]
  k = np.arange(n + 1)
  names = result.get("class_names") or [str(i) for i in range(10)]
  grid = result["grid"]
  cols = max(len(grid["longest"]), len(grid["shortest"]), 1)
  fig = plt.figure(figsize=(22, 11))
  outer = fig.add_gridspec(2, 1, height_ratios=[1.5, 1], hspace=0.85)
  top = outer[0].subgridspec(1, 4, wspace=0.45)
  axes = [fig.add_subplot(top[i]) for i in range(4)]
  where = "input image" if w == "image" else "input of block 1"
  method = result.get("method", "exact")

  ax = axes[0]
  ax.bar(k - 0.27, d["lo"], width=0.27, color="tab:blue", label="window start (lo)")
  ax.bar(k, d["peak"], width=0.27, color="tab:orange", label="peak length (argmax ||G_k||)")
  ax.bar(k + 0.27, d["hi"], width=0.27, color="tab:green", label="window end (hi)")
  ax.set(title=f"(a) per-image windows carrying {100 * result['share']:.0f}% of sum_k ||G_k||\n"
               f"({result['num_images']} test images, {method}, gradient at the {where})",
         xlabel="path length k", ylabel="images")
  legend_below(ax, fontsize=7)

  ax = axes[1]
  ml = np.asarray(per[f"{w}_mean_length"])
  correct = np.asarray(per["pred"]) == np.asarray(per["label"])
  bins = np.linspace(ml.min(), ml.max(), 40)
  ax.hist(ml[correct], bins=bins, density=True, alpha=0.5, color="tab:blue", label=f"correct ({correct.sum()})")
  ax.hist(ml[~correct], bins=bins, density=True, alpha=0.5, color="tab:red", label=f"wrong ({(~correct).sum()})")
  ax.axvline(n / 2, color="0.4", ls=":", lw=1, label=f"mean length of all 2^n paths ({n / 2:g})")
  widths = d["width"]
  common = ", ".join(f"{x['lo']}-{x['hi']}: {x['images']}" for x in d["windows"][:4])
  ax.plot([], [], " ", label="window widths: " + ", ".join(f"{i + 1}: {c}" for i, c in enumerate(widths) if c))
  ax.plot([], [], " ", label=f"commonest windows: {common}")
  ax.set(title="(b) mean path length of each image's profile", xlabel="sum_k k ||G_k|| / sum_k ||G_k||",
         ylabel="density")
  legend_below(ax, fontsize=7)

  ax = axes[2]
  dec = groups["by_loss_decile"]
  x = np.arange(1, len(dec) + 1)
  for key, color, label in (("peak", "tab:orange", "peak length"), ("mean_length", "tab:purple", "mean length")):
    med = [dec[g][key]["q50"] for g in dec]
    ax.plot(x, med, "o-", color=color, ms=4, label=f"{label}: median, 25-75% band")
    ax.fill_between(x, [dec[g][key]["q25"] for g in dec], [dec[g][key]["q75"] for g in dec], color=color, alpha=0.15)
  ax2 = ax.twinx()
  ax2.plot(x, [100 * e for e in result["loss_deciles"]["error"]], "s--", color="0.5", ms=3, lw=1)
  ax2.set_ylabel("test error in the decile (%, grey)", color="0.4")
  c = result["loss_link"][w]["mean_length"]
  ax.plot([], [], " ", label=f"Spearman(mean length, loss) {c['spearman']:+.3f} "
          f"[{c['bootstrap_ci'][0]:+.3f}, {c['bootstrap_ci'][1]:+.3f}]")
  ax.set(title="(c) path length against the image's loss", xlabel="loss decile (1: lowest loss)",
         ylabel="path length k", xticks=x)
  legend_below(ax, fontsize=7)

  ax = axes[3]
  m = link["mean_flips_by_mean_length_decile"]
  ax.plot(m["mean_length_median"], m["mean_flips"], "o-", color="tab:red", label="all images: deletions that flip the prediction")
  ax.plot(m["mean_length_median"], m["mean_breaks_correct"], "s--", color="tab:brown",
          label="correct images: deletions that make it wrong")
  for key, lab in (("mean_length_vs_flips", "mean length"), ("peak_vs_flips", "peak length")):
    c = link[key]
    ax.plot([], [], " ", label=f"Spearman({lab}, flips) {c['spearman']:+.3f}, 95% CI [{c['bootstrap_ci'][0]:+.3f}, "
            f"{c['bootstrap_ci'][1]:+.3f}] (bootstrap); given the loss {c['partial_given_control']['rho']:+.3f}")
  ax.set(title=f"(d) lesion link: {n} single deletions per image", xlabel="mean path length (decile median)",
         ylabel="mean number of single deletions")
  legend_below(ax, fontsize=7)

  rows = outer[1].subgridspec(2, cols, hspace=0.6, wspace=0.08)
  for r, (key, title) in enumerate((("longest", "furthest toward long paths"), ("shortest", "furthest toward short paths"))):
    for i, item in enumerate(grid[key]):
      a = fig.add_subplot(rows[r, i])
      a.imshow(image_from_json(item["pixels"]), interpolation="nearest")
      a.set_xticks([]), a.set_yticks([])
      lab, pred = names[item["label"]][:5], names[item["pred"]][:5]
      a.set_title(f"{lab}" + ("" if item["label"] == item["pred"] else f"→{pred}") +
                  f"\nm {item['mean_length']:.2f} f {item['flips']}", fontsize=7,
                  color="black" if item["label"] == item["pred"] else "tab:red")
      if i == 0:
        a.set_ylabel(title.replace("furthest toward ", "").replace(" paths", ""), fontsize=8)
  fig.text(0.5, 0.375, "test images by the mean path length of their profile (m), top row longest, bottom shortest; "
           "label (→ wrong prediction in red), f = single deletions flipping it", ha="center", fontsize=9)
  return fig


def save(result: dict, path: str) -> str:
  return save_figure(figure(result), path)
