"""The language model's study in numbers (summary.{json,md,png}) and beside the ViT and the ResNet.

A pure function of the JSONs `llm_study.run` writes and of the ViT study's comparison.json (its ViT and ResNet
rows). The networks' costs come in their own units (nats/token of next-token loss; points of test error) and in
one shared unit, the share of the way from the intact network to chance: (cost) / (chance - intact), chance
being ln(vocabulary) nats/token for the language model and 90% error for CIFAR-10. Positions are relative
depths (i + 0.5) / n; k deletions are fractions of the n branches.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from resnet_ensembles.plots import llm as llm_plot
from resnet_ensembles.study.llm_tables import FRACTIONS, lm_tables, table



def _load(workdir: str, part: str) -> Optional[dict]:
  path = os.path.join(workdir, f"{part}.json")
  return json.load(open(path)) if os.path.isfile(path) else None


def _se(values) -> float:
  v = np.asarray(values, np.float64)
  return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def language_model(workdir: str) -> dict:
  """Every part that is there, summarised: costs in nats/token over the intact network."""
  out: dict = {}
  single, subsets, orders = _load(workdir, "single"), _load(workdir, "subsets"), _load(workdir, "orderings")
  checks, lens, geometry = _load(workdir, "checks"), _load(workdir, "lens"), _load(workdir, "geometry")
  painters, paths, looped = _load(workdir, "painters"), _load(workdir, "paths"), _load(workdir, "looped")
  if checks:
    out["checks"] = {k: checks.get(k) for k in ("loss", "loss_se", "loss_140_spaced", "windows", "window", "tokens",
                                                 "published_loss", "greedy_equal_to_published", "uniform_loss")}
  if single:
    rows = single["rows"]
    full = next(r for r in rows if r["kind"] == "full")
    n = single["num_blocks"]
    chance = float(np.log(_vocab(single)))
    out.update(n=n, full=full, chance=chance, tokens=single["windows"] * single["window"])
    subl = [r for r in rows if r["kind"] == "sublayer"]
    out["single"] = [{"block": r["block"], "name": f"L{r['layer']} {r['sublayer']}", "position": (r["block"] + .5) / n,
                      **{m: r[m] - full[m] for m in ("loss", "kl", "agreement", "accuracy")}} for r in subl]
    out["layers"] = [{"layer": r["layer"], **{m: r[m] - full[m] for m in ("loss", "kl", "agreement", "accuracy")}}
                     for r in rows if r["kind"] == "layer"]
  if subsets and single:
    full_s = next(r for r in subsets["rows"] if r["k"] == 0)
    by_k = {}
    for r in subsets["rows"]:
      by_k.setdefault(r["k"], []).append(r)
    out["k"] = [{"k": k, "fraction": k / out["n"], "count": len(rs),
                 "cost": float(np.mean([r["loss"] - full_s["loss"] for r in rs])),
                 "se": _se([r["loss"] for r in rs]), "kl": float(np.mean([r["kl"] for r in rs])),
                 "agreement": float(np.mean([r["agreement"] for r in rs]))} for k, rs in sorted(by_k.items())]
    out["subsets_full_loss"] = full_s["loss"]
    depth = subsets["layers"]
    spans = []
    for length in range(1, depth):
      for start in range(depth - length + 1):
        gone = list(range(2 * start, 2 * (start + length)))
        r = next(r for r in subsets["rows"] if r["deleted"] == gone)
        spans.append({"start": start, "length": length, "cost": r["loss"] - full_s["loss"], "kl": r["kl"]})
    out["spans"] = spans
  if orders:
    ident = next(r for r in orders["rows"] if r["layer_order"] == sorted(r["layer_order"]))
    out["orders"] = [{"layer_order": r["layer_order"], "tau": r["kendall_tau"], "adjacent_swap": r["adjacent_swap"],
                      "cost": r["loss"] - ident["loss"], "kl": r["kl"], "agreement": r["agreement"]}
                     for r in orders["rows"]]
  if painters:
    full_p = next(r for r in painters["rows"] if r.get("full"))
    out["painters"] = [{k: r.get(k) for k in ("variant", "start", "length", "middle", "kendall_tau")} |
                       {"cost": r["loss"] - full_p["loss"], "kl": r["kl"], "agreement": r["agreement"]}
                       for r in painters["rows"] if not r.get("full")]
    if looped:
      out["painters"] += [{"variant": f"looped parallel x{r['loops']}", "start": r["start"], "length": r["length"],
                           "middle": True, "kendall_tau": None, "cost": r["loss"] - full_p["loss"], "kl": r["kl"],
                           "agreement": r["agreement"]} for r in looped["rows"]]
  if lens:
    out["lens"] = [{"after": r["after"], "loss": r["loss"], "kl": r["kl"], "agreement": r["agreement"]}
                   for r in lens["rows"]]
  if geometry:
    out["geometry"] = {k: geometry[k] for k in ("angular_distance", "block_influence")}
  if paths:
    mean = np.asarray(paths["one_path_mean"])
    out["paths"] = {"lo": paths["effective_range"]["lo"], "hi": paths["effective_range"]["hi"],
                    "share": paths["effective_range"]["path_fraction"], "decay": paths["decay"]["factor_per_block"],
                    "r2": paths["decay"]["r2"], "gradient_by_length": (mean / mean.max()).tolist(),
                    "exact_g_k": paths["exact_g_k"], "sum_error": paths["sum_error"], "n": paths["num_blocks"]}
  return out


def _vocab(part: dict) -> int:
  from resnet_ensembles.store import llama2c
  return llama2c.read_header(part["config"]["checkpoint"])[0].vocab_size if os.path.isfile(
      part["config"]["checkpoint"]) else 512


def _image_row(net: dict) -> dict:
  """A network of the ViT study's comparison.json in the shared units (shares of the way to 90% error)."""
  gap = 0.9 - net["full"]
  costs = [s["cost"] for s in net["single"]]
  k = {f: min(net["k"], key=lambda r: abs(r["fraction"] - f)) for f in FRACTIONS}
  near = [r["cost"] for r in net["reorder"] if r["tau"] >= 0.8]
  return dict(n=net["n"], intact=f"{100 * net['full']:.2f}% error", chance="90% error",
              single=f"+{100 * np.mean(costs):.2f} (+{100 * max(costs):.2f}) pts",
              single_share=(np.mean(costs) / gap, max(costs) / gap), first_share=costs[0] / gap,
              k_share={f: (r["cost"] / gap, r["k"]) for f, r in k.items()},
              reorder_share=float(np.median(near)) / gap if near else None,
              window=(net["paths"]["lo"], net["paths"]["hi"], net["paths"]["share"]), decay=net["paths"]["decay"],
              positions=[s["position"] for s in net["single"]], single_shares=[c / gap for c in costs],
              k_curve=[(r["fraction"], r["cost"] / gap) for r in net["k"]],
              gradient=net["paths"]["gradient_by_length"])


def _lm_row(lm: dict) -> dict:
  gap = lm["chance"] - lm["full"]["loss"]
  costs = [s["loss"] for s in lm["single"]]
  kgap = lm["chance"] - lm["subsets_full_loss"]
  k = {f: min(lm["k"][1:], key=lambda r: abs(r["fraction"] - f)) for f in FRACTIONS}
  swaps = [o["cost"] for o in lm["orders"] if o["adjacent_swap"]]
  return dict(n=lm["n"], intact=f"{lm['full']['loss']:.3f} nats/token ({100 * lm['full']['accuracy']:.1f}% top-1)",
              chance=f"{lm['chance']:.3f} nats/token",
              single=f"+{np.mean(costs):.3f} (+{max(costs):.3f}) nats/token",
              single_share=(np.mean(costs) / gap, max(costs) / gap), first_share=costs[0] / gap,
              k_share={f: (r["cost"] / kgap, r["k"]) for f, r in k.items()},
              reorder_share=float(np.median(swaps)) / gap, window=(lm["paths"]["lo"], lm["paths"]["hi"],
                                                                  lm["paths"]["share"]),
              decay=lm["paths"]["decay"], positions=[s["position"] for s in lm["single"]],
              single_shares=[c / gap for c in costs], k_curve=[(r["fraction"], r["cost"] / kgap) for r in lm["k"]],
              gradient=lm["paths"]["gradient_by_length"])


def write(workdir: str, compare_with: Optional[str] = None) -> dict:
  """summary.json (the language model's summary and the comparison rows), summary.md, summary.png."""
  lm = language_model(workdir)
  rows = {}
  complete = all(key in lm for key in ("single", "k", "orders", "paths"))
  if complete:
    rows["language model (stories260K)"] = _lm_row(lm)
  if complete and compare_with and os.path.isfile(compare_with):
    other = json.load(open(compare_with))
    rows["ViT (6 layers)"] = _image_row(other["vit"])
    rows["ResNet-32 (own)"] = _image_row(other["resnet"])
  out = {"language_model": lm, "comparison": {k: {a: b for a, b in v.items()} for k, v in rows.items()},
         "compare_with": compare_with}
  json.dump(out, open(os.path.join(workdir, "summary.json"), "w"), indent=1, default=lambda o: np.asarray(o).tolist())
  md = ["# The language model's residual stream\n"]
  if rows:
    md += ["## Beside the ViT and the ResNet\n", table(rows)]
    llm_plot.save(lm, rows, os.path.join(workdir, "summary.png"))
  md += [lm_tables(lm)]
  open(os.path.join(workdir, "summary.md"), "w").write("\n".join(md))
  print(f"llm study: {os.path.join(workdir, 'summary.md')}")
  return out
