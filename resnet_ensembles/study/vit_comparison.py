"""The ViT beside a ResNet (experiments/vit_study.py): the paper's lesion and path effects on both residual
streams, and Sun et al.'s ("Transformer Layers as Painters") findings checked point by point on the ViT.

A pure function of the sweep JSONs `depth_series.run` writes (one folder per network: single_stored.json,
multi_stored.json, reorder_stored.json, paths.json; the ViT also layers_stored.json and painters_stored.json).
Positions are relative depths (i + 0.5) / n so a 12-branch ViT and a 15-block ResNet share an axis; k
deletions are fractions of the deletable branches; a path through an attention and an MLP branch has length 2.
Standard errors as in `study.series`: std over lesions / sqrt(count); of one error rate sqrt(p (1 - p) / N).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from resnet_ensembles.lesion.painters import middle_span
from resnet_ensembles.lesion.summary import errors_by_k, reorderings
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.study.series import load_json, standard_error

VARIANTS = ("skip", "shuffle", "reverse", "parallel")


def _net(folder: str, sweep: str) -> Optional[dict]:
  data = load_json(os.path.join(folder, f"{sweep}_stored.json"))
  return None if data is None else dict(data["networks"][0], test_images=data["test_images"])


def stream_summary(folder: str) -> dict:
  """Per network: full error, single-deletion cost by relative position, k curve by fraction, reorder
  points (tau, cost), effective window and decay; costs in fractions of images over the full network."""
  out: dict = {}
  single = _net(folder, "single")
  if single:
    n, full, openers = single["num_blocks"], single["full_error"], set(single["stage_openers"])
    out.update(n=n, full=full, full_se=float(np.sqrt(full * (1 - full) / single["test_images"])),
               single=[{"block": r["deleted"], "position": (r["deleted"] + 0.5) / n, "cost": r["error"] - full,
                        "opener": r["deleted"] in openers} for r in single["rows"]])
    multi = _net(folder, "multi")
    if multi:
      deletable = n - len(openers)
      out["k"] = [{"k": k, "fraction": k / deletable, "cost": float(np.mean(e)) - full, "se": standard_error(e)}
                  for k, e in sorted(errors_by_k(multi).items())]
    reorder = _net(folder, "reorder")
    if reorder:
      out["reorder"] = [{"tau": r["kendall_tau"], "cost": r["error"] - full} for r in reorderings(reorder)]
      out["identity_draws"] = len(reorder["rows"]) - len(out["reorder"])
  pj = load_json(os.path.join(folder, "paths.json"))
  if pj:
    r = pj["effective_range"]["image"]
    mean = np.asarray(pj["sampled"]["image_mean"], np.float64)
    out["paths"] = {"lo": r["lo"], "hi": r["hi"], "n": pj["num_blocks"], "share": r["path_fraction"],
                    "decay": paths.exponential_fit(pj["sampled"]["image_mean"])["factor_per_block"],
                    "gradient_by_length": (mean / mean.max()).tolist()}
  return out


def painters_summary(folder: str) -> dict:
  """The ViT's whole-layer deletions and its Sun et al. variants (cost by variant and span length)."""
  out: dict = {}
  layers, painters = _net(folder, "layers"), _net(folder, "painters")
  if layers:
    full = layers["full_error"]
    out["layer_cost"] = [r["error"] - full for r in sorted(layers["rows"], key=lambda r: r["deleted_unit"])]
  if painters:
    full, by, depth = painters["full_error"], {}, painters["num_layers"]
    for r in painters["rows"]:
      if r["variant"] == "parallel" and (r["length"] > depth - 2 or
                                         (r["start"], r["start"] + r["length"]) != middle_span(depth, r["length"])):
        continue  # the table compares the centred middle spans; every span stays in painters_stored.json
      by.setdefault(r["variant"], {}).setdefault(r["length"], []).append(r["error"] - full)
    out["variants"] = {v: {str(n): {"cost": float(np.mean(c)), "se": standard_error(c), "count": len(c)}
                           for n, c in sorted(by.get(v, {}).items())} for v in VARIANTS}
    out["num_layers"] = painters["num_layers"]
  return out


def findings(p: dict) -> list[dict]:
  """Sun et al.'s qualitative findings with the rule each is checked by here and its verdict on this ViT."""
  out = []
  lc = p.get("layer_cost")
  if lc and len(lc) >= 3:
    middle = max(lc[1:-1])
    beats = [lc[0] > middle, lc[-1] > middle]
    out.append({"finding": "the first and the last layers matter most; middle layers can be dropped",
                "rule": "deleting the first (last) layer costs more than deleting any middle layer",
                "numbers": f"first {100 * lc[0]:+.2f}, last {100 * lc[-1]:+.2f}, middle at most {100 * middle:+.2f} pts",
                "verdict": "yes" if all(beats) else "partly" if any(beats) else "no"})
  var = p.get("variants") or {}
  skip = {int(n): e["cost"] for n, e in (var.get("skip") or {}).items()}
  if len(skip) >= 2:
    ns = sorted(skip)
    monotone = all(skip[b] >= skip[a] - 1e-9 for a, b in zip(ns, ns[1:]))
    out.append({"finding": "skipping more middle layers degrades gracefully",
                "rule": "the cost grows with the number N of middle layers skipped, and skipping one costs less "
                        "than deleting the first or the last layer",
                "numbers": ", ".join(f"N={n}: {100 * skip[n]:+.2f}" for n in ns) + " pts",
                "verdict": "yes" if monotone and lc and skip[ns[0]] < min(lc[0], lc[-1]) else "no"})
  for variant, finding in (("shuffle", "middle layers may run in another (random) order"),
                           ("reverse", "middle layers may run in reverse order"),
                           ("parallel", "middle layers may run in parallel")):
    got = {int(n): e["cost"] for n, e in (var.get(variant) or {}).items()}
    common = sorted(set(got) & set(skip))
    if not common:
      continue
    better = [got[n] <= skip[n] for n in common]
    out.append({"finding": finding + ", degrading gracefully",
                "rule": f"for each span length N, {variant} costs no more than skipping the same N layers",
                "numbers": ", ".join(f"N={n}: {100 * got[n]:+.2f} vs skip {100 * skip[n]:+.2f}" for n in common) + " pts",
                "verdict": "yes" if all(better) else "partly" if any(better) else "no"})
  return out


def summarize(vit_folder: str, resnet_folder: str) -> dict:
  painters = painters_summary(vit_folder)
  return {"vit": stream_summary(vit_folder), "resnet": stream_summary(resnet_folder), "painters": painters,
          "findings": findings(painters)}


def labels(names: dict[str, str], vit_name: str, compare_with: str) -> dict[str, str]:
  """The two columns' names: the ViT's by its network name, the ResNet's by its sweep folder's name (the depth
  series names its folders own_resnet32, resnet20, ...), each falling back to the bare name."""
  resnet = os.path.basename(os.path.normpath(compare_with))
  return {"vit": names.get(vit_name, vit_name), "resnet": names.get(resnet, "ResNet")}


def _pts(x: Optional[float], se: Optional[float] = None) -> str:
  return "n/a" if x is None else f"{100 * x:+.2f}" + (f" ± {100 * se:.2f}" if se is not None else "")


def render(summary: dict, labels: dict[str, str]) -> str:
  """Markdown: the side-by-side table, the ViT's layer lesions, and the Painters findings."""
  rows = ["| | " + " | ".join(labels.get(k, k) for k in ("vit", "resnet")) + " |", "|---|---:|---:|"]

  def line(name, get):
    vals = []
    for key in ("vit", "resnet"):
      s = summary[key]
      try:
        vals.append(get(s) if s.get("n") else "not yet swept")
      except (KeyError, IndexError, TypeError, ValueError):
        vals.append("n/a")
    rows.append(f"| {name} | " + " | ".join(vals) + " |")

  line("residual branches n", lambda s: str(s["n"]))
  line("full test error %", lambda s: f"{100 * s['full']:.2f} ± {100 * s['full_se']:.2f}")
  typical = lambda s: [r["cost"] for r in s["single"] if not r["opener"]]
  line("single deletion: mean (worst) cost, pts",
       lambda s: f"{_pts(np.mean(typical(s)), standard_error(typical(s)))} ({_pts(max(typical(s)))})")
  for frac in (0.1, 0.2, 0.4):
    line(f"k deletions, {int(100 * frac)}% of branches: cost, pts",
         lambda s, f=frac: (lambda e: f"{_pts(e['cost'], e['se'])} (k={e['k']})")(
             min(s["k"], key=lambda e: abs(e["fraction"] - f))))
  line("reorderings (identity draws left out), tau >= 0.8: median cost, pts",
       lambda s: _pts(float(np.median([r["cost"] for r in s["reorder"] if r["tau"] >= 0.8]))))
  line("effective window (share of paths)",
       lambda s: f"{s['paths']['lo']}-{s['paths']['hi']} of {s['paths']['n']} ({100 * s['paths']['share']:.1f}%)")
  line("gradient decay per branch", lambda s: f"x{s['paths']['decay']:.3f}")
  p = summary["painters"]
  out = rows + [""]
  if p.get("layer_cost"):
    out += ["ViT whole-layer deletions (cost, pts): " +
            ", ".join(f"layer {i}: {_pts(c)}" for i, c in enumerate(p["layer_cost"])), ""]
  if p.get("variants"):
    lengths = sorted({int(n) for v in p["variants"].values() for n in v})
    out += ["| ViT middle span of N layers: cost, pts | " + " | ".join(f"N={n}" for n in lengths) + " |",
            "|---|" + "---:|" * len(lengths)]
    for variant, by_n in p["variants"].items():
      out.append(f"| {variant} | " + " | ".join(_pts(by_n[str(n)]["cost"]) if str(n) in by_n else "" for n in lengths)
                 + " |")
    out.append("")
  if summary["findings"]:
    out += ["| Sun et al. (Painters) finding | rule checked here | this ViT | holds? |", "|---|---|---|---|"]
    out += [f"| {f['finding']} | {f['rule']} | {f['numbers']} | {f['verdict']} |" for f in summary["findings"]]
  return "\n".join(out) + "\n"
