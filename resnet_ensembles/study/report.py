"""report.md of a reproduction (experiments/reproduce.py): a pure function of the stage JSONs + paper.numbers().

`render(inputs, numbers)` builds the markdown from already-loaded JSONs; `build(workdir)` loads them.
Every row of every table states its claim, the paper's number, this run's number (and its effect in points
over the full network) and a verdict that compares the effect's sign and size with the paper's, under the
rules written out in the report itself (`verdicts.RULES`).
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from resnet_ensembles.training import metrics
from resnet_ensembles import paper
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.utils import provenance
from resnet_ensembles.lesion.summary import k_means, reorderings, single_stats
from resnet_ensembles.study import verdicts as v
from resnet_ensembles.study.verdicts import RULES

RUNS = ("resnet", "sd", "short", "short_fwd")
TAU_BINS = (("tau>=0.95", 0.95, 1.01), ("0.90<=tau<0.95", 0.90, 0.95), ("tau<0.90", -1.01, 0.90))
NA = "n/a"


def _pct(x: Optional[float]) -> str:
  return NA if x is None else f"{100 * x:.2f}%"


def _ppct(x) -> str:
  if x is None:
    return NA
  if isinstance(x, (list, tuple)):
    return "-".join(f"{v:g}%" for v in x)
  return f"{x:g}%"


def _with_cost(err: Optional[float], full: float) -> str:
  return NA if err is None else f"{_pct(err)} ({v.points(err - full)})"


def _table(rows: list[tuple]) -> str:
  lines = ["| claim | paper's number | this run | holds? |", "|---|---|---|---|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def _net(result: dict, label: Optional[str] = None) -> dict:
  nets = result["networks"]
  return nets[0] if label is None else next(n for n in nets if n["label"] == label)


def tau_medians(net: dict) -> dict:
  out = {}
  for name, lo, hi in TAU_BINS:
    errs = [r["error"] for r in reorderings(net) if lo <= r["kendall_tau"] < hi]
    out[name] = (float(np.median(errs)), len(errs)) if errs else (None, 0)
  return out


def render(inputs: dict, numbers: dict) -> str:
  """inputs: {"lesion": {run: {sweep: JSON}}, "paths": paths JSON, "figures": [relative png paths], "bn",
  "treatments": the forward short-path run's test_time_treatments.json}."""
  le, pn = numbers["lesion"], numbers["paths"]
  lesion = inputs["lesion"]
  res_single = _net(lesion["resnet"]["single"], "ResNet")
  plain_single = _net(lesion["resnet"]["single"], "plain")
  s, p = single_stats(res_single), single_stats(plain_single)
  full = s["full"]
  depth = res_single["model"]["depth"]
  n = res_single["num_blocks"]
  out = [f"# Reproduction of Veit et al. 2016: ResNet-{depth} ({n} blocks) vs the paper's ResNet-110 (54 blocks)",
         "",
         f"Lesions use {inputs['bn']} BatchNorm statistics on {lesion['resnet']['single']['test_images']} test "
         "images. Paper numbers come from resnet_ensembles/paper_numbers.json (Veit et al. 2016 unless noted); "
         "they are for a deeper network, so the comparison is about the qualitative claim, judged by the rules "
         "below.", "", "## Rules for \"holds?\"", ""]
  out += [RULES[0], ""] + [f"{i}. {r}" for i, r in enumerate(RULES[1:], 1)]
  if inputs.get("trained_by"):  # which code on which machine trained each network
    errors = {"resnet": full, "plain": p["full"], **{r: _net(lesion[r]["single"])["full_error"] for r in RUNS[1:]}}
    out += ["", "## Networks", "", "| run | test error (as lesioned) | trained by (commit on machine: steps) |",
            "|---|---|---|"] + [f"| {r} | {_pct(errors.get(r))} | {t} |" for r, t in inputs["trained_by"].items()]

  pe = v.paper_effects(numbers)
  he = numbers.get("he2016a_cifar10_error", {}).get(f"resnet{depth}")
  rows = [(f"full-network error (ResNet-{depth})",
           _ppct(le["full_error"]) + " (ResNet-110)" + (f"; He et al. ResNet-{depth}: {he:g}%" if he else ""),
           _pct(full) + f" ({100 * full - (he or le['full_error']):+.2f} pts over the published)",
           v.YES if full * 100 <= (he or le["full_error"]) + 1.5 else v.NO),
          (f"full-network error (plain-{depth})", NA, _pct(p["full"]), NA)]
  out += ["", "## Full network", "", _table(rows)]
  untrained = full > 0.5  # from here on: claims about lesions and paths

  rows = [("single deletion, typical block: mean (max)", _ppct(le["single_deletion_typical_range"]),
           f"{_with_cost(s['typical_mean'], full)} ({_with_cost(s['typical_max'], full)})",
           v.single_typical(full, s["typical_mean"], s["typical_max"], pe, untrained)),
          ("single deletion, stage openers: mean", _ppct(le["single_deletion_stage_opener"]),
           _with_cost(s["opener_mean"], full), v.single_opener(full, s["opener_mean"], s["typical_mean"], pe, untrained)),
          ("single deletion, plain net: mean", _ppct(le["plain_single_deletion"]), _pct(p["all_mean"]),
           v.plain_single(p["all_mean"], s["typical_mean"], untrained))]
  out += ["", "## Deleting individual blocks (Fig. 3)", "", _table(rows)]

  km = k_means(_net(lesion["resnet"]["multi"]))
  deletable = n - len(res_single["stage_openers"])
  ks = v.k_at_fractions(deletable, sorted(km))
  errors = {f: None if k is None else km[k] for f, k in ks.items()}
  kv = v.k_deleted(full, errors, pe, untrained)
  paper_k = dict(zip(v.K_FRACTIONS, sorted(int(k) for k in le["k_deleted_mean_error"])))
  rows = []
  for f, k in ks.items():
    want = max(1, int(round(f * deletable)))
    rows.append((f"mean error with {100 * f:.0f}% of the {deletable} deletable blocks deleted (k = {want})",
                 f"{_ppct(le['k_deleted_mean_error'][str(paper_k[f])])} (k = {paper_k[f]} of 51)",
                 _with_cost(errors[f], full) if k is not None else f"{NA} (not run: max k {max(km) if km else 0})",
                 kv[f]))
  extra = ", ".join(f"k={k}: {_pct(e)}" for k, e in km.items())
  out += ["", "## Deleting several blocks (Fig. 5a)", "", _table(rows), "", f"All k run: {extra}."]

  tm = tau_medians(_net(lesion["resnet"]["reorder"]))
  paper_tau = le["reorder_median_error_by_tau"]
  rv = v.reorder(full, {b: m for b, (m, _) in tm.items()}, pe, untrained)
  rows = [(f"median error of reorderings, Kendall {name}", _ppct(paper_tau.get(name)),
           f"{_with_cost(tm[name][0], full)} ({tm[name][1]} orders)", rv.get(name, NA)) for name, _, _ in TAU_BINS]
  out += ["", "## Reordering blocks (Fig. 5b)", "", _table(rows)]

  pj = inputs["paths"]
  r, nb = pj["effective_range"]["image"], pj["num_blocks"]
  rows = [("effective path lengths (share of gradient " f"{100 * r['share']:.0f}%)",
           f"{pn['effective_path_lengths'][0]}-{pn['effective_path_lengths'][1]} of 54",
           f"{r['lo']}-{r['hi']} of {nb}", v.window(r["lo"], r["hi"], nb, pe, untrained)),
          ("share of all paths that are effective", f"{100 * pn['effective_share_of_paths']:.2f}%",
           f"{100 * r['path_fraction']:.2f}%", v.verdict(r["path_fraction"] < 0.5, False, untrained))]
  fit = paths.exponential_fit(pj["sampled"]["image_mean"])
  rows.append(("gradient of one path vs its length (Fig. 6b)", pn["gradient_vs_length"],
               f"x{fit['factor_per_block']:.3g} per block, r^2 {fit['r2']:.3f}",
               v.verdict(fit["factor_per_block"] < 1, fit["r2"] >= 0.9, untrained)))
  out += ["", "## Effective paths (Fig. 6)", "", _table(rows)]

  sp, sd_n = numbers["short_paths"], numbers["stochastic_depth"]
  route_full = _net(lesion["short"]["single"])["full_error"]
  fwd_full = _net(lesion["short_fwd"]["single"])["full_error"]
  t = inputs["treatments"]
  best_fwd = min(t["unscaled_error"], t["scaled_error"])
  close = lambda e: v.YES if abs(e - full) <= 0.01 else v.NO
  rows = [("short-path training (gradient routing): full error", _ppct(sp["short_path_training_error"]),
           _with_cost(route_full, full), close(route_full)),
          ("short-path training (forward skip): full error, branches unscaled / scaled by "
           f"K/n = {t['num_active']}/{t['num_blocks']}", _ppct(sp["short_path_training_error"]),
           f"{_pct(t['unscaled_error'])} / {_pct(t['scaled_error'])}", close(best_fwd)),
          ("normal training: full error", _ppct(sp["normal_training_error"]), _pct(full), NA)]
  out += ["", "## Short-path vs normal training (Sec. 5.3)", "", _table(rows), "",
          f"Lesion sweeps of the forward short-path network use its test-time treatment as trained "
          f"({'scaled' if t['trained_with'].get('scale_at_test') else 'unscaled'}: {_pct(fwd_full)})."]

  sd = single_stats(_net(lesion["sd"]["single"]))
  sd_rise = None if sd["typical_mean"] is None else sd["typical_mean"] - sd["full"]
  res_rise = None if s["typical_mean"] is None else s["typical_mean"] - full
  rows = [("stochastic depth: full error", _ppct(sd_n["veit_sd_network_error"]), _pct(sd["full"]), NA),
          ("stochastic depth: typical single-deletion error, mean (max)",
           _ppct(sd_n["veit_sd_single_deletion_range"]),
           f"{_with_cost(sd['typical_mean'], sd['full'])} ({_pct(sd['typical_max'])})",
           v.sd_resilience(sd_rise, res_rise, pe, untrained)),
          ("rise of mean single-deletion error over full error: SD vs normal", NA,
           f"{_pct(sd_rise)} vs {_pct(res_rise)}", NA)]
  sdk, shk, sfk = (k_means(_net(lesion[run]["multi"])) for run in ("sd", "short", "short_fwd"))
  for k in sorted(set(km) | set(sdk) | set(shk) | set(sfk)):
    rows.append((f"mean error at k = {k}: normal / SD / short-path route / short-path forward", NA,
                 f"{_pct(km.get(k))} / {_pct(sdk.get(k))} / {_pct(shk.get(k))} / {_pct(sfk.get(k))}", NA))
  out += ["", "## Stochastic depth and short-path resilience (Fig. 8)", "", _table(rows)]

  out += ["", "## Figures", ""]
  out += [f"![{f}]({f})" for f in inputs["figures"]]
  src = numbers.get("sources", {})
  out += ["", "## Sources", ""] + [f"- {k}: {v}" for k, v in src.items()]
  return "\n".join(out) + "\n"


def build(workdir: str, bn: str = "stored") -> str:
  """Loads the stage JSONs under `workdir` and renders the report."""
  def load(*parts):
    with open(os.path.join(workdir, *parts)) as f:
      return json.load(f)

  sweeps = {"resnet": ("single", "multi", "reorder"), "sd": ("single", "multi"), "short": ("single", "multi"),
            "short_fwd": ("single", "multi")}
  lesion = {run: {s: load("lesion", run, f"{s}_{bn}.json") for s in ss} for run, ss in sweeps.items()}
  figures = [os.path.join("lesion", run, f"{s}_{bn}.png") for run, ss in sweeps.items() for s in ss]
  figures += [os.path.join("paths", "paths.png"), os.path.join("variants", "variants.png")]
  trained_by = {}
  for run in ("resnet", "plain") + RUNS[1:]:
    run_dir = os.path.join(workdir, "train", run)
    final = max(r["step"] for r in metrics.read_metrics(run_dir))
    trained_by[run] = provenance.trained_by(provenance.read_starts(run_dir), final)
  return render({"lesion": lesion, "paths": load("paths", "paths.json"), "figures": figures, "bn": bn,
                 "treatments": load("train", "short_fwd", "test_time_treatments.json"), "trained_by": trained_by},
                paper.numbers())
