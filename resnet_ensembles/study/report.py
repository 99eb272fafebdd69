"""report.md of a reproduction (experiments/reproduce.py): a pure function of the stage JSONs + paper.numbers().

`render(inputs, numbers)` builds the markdown from already-loaded JSONs; `build(workdir)` loads them.
Every row of every table states its claim, the paper's number, this run's number and whether the claim
holds under a simple rule that is written out in the report itself (RULES).
"""
from __future__ import annotations

import functools
import json
import os
from typing import Optional

import numpy as np

from resnet_ensembles.training import metrics
from resnet_ensembles import paper
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.utils import provenance
from resnet_ensembles.lesion.summary import k_means, single_stats

RUNS = ("resnet", "sd", "short", "short_fwd")
TAU_BINS = (("tau>=0.95", 0.95, 1.01), ("0.90<=tau<0.95", 0.90, 0.95), ("tau<0.90", -1.01, 0.90))
RULES = [
    "Full-network error: this run's ResNet error is at most 2x the published one (He et al.'s number for "
    "this depth where it exists, else Veit et al.'s ResNet-110). If the ResNet's full error is above 50% "
    "(not trained), every other verdict reads n/a: lesion claims mean nothing at chance level.",
    "Single deletion, typical block (non-opener): the worst typical single-deletion error stays within 2x "
    "the full-network error.",
    "Single deletion, stage openers: deleting an opener hurts more than deleting a typical block (mean).",
    "Single deletion, plain net: mean single-deletion error of the plain net is above 50%.",
    "k deleted: k = 1 within 2x the full error; k = 5, 10 below 50% error and not below the error at the "
    "previous k (smooth degradation); k = 20 not below the error at k = 10.",
    "Reordering: median error in the tau >= 0.95 bin is at most 3x the full error; in the 0.90-0.95 bin "
    "below 50% (graceful); other bins are reported only.",
    "Effective paths: the effective range's upper end is at most n/2 (paths carrying most gradient are "
    "shorter than the typical path); their share of all paths is below 50%.",
    "One path's gradient decays exponentially with its length: a line through log10(magnitude at the input "
    "image) over k = 0..n falls (factor per block below 1) and fits with r^2 >= 0.9.",
    "Short-path training (either reading): its full error is within 1 point (absolute) of the normally "
    "trained network's; for the forward reading, with whichever test-time treatment (branches unscaled or "
    "scaled by K/n) scores better.",
    "Stochastic depth: its mean typical single-deletion error rises over its own full error by no more "
    "than the normally trained network's does.",
]
NA = "n/a"


def _pct(x: Optional[float]) -> str:
  return NA if x is None else f"{100 * x:.2f}%"


def _ppct(x) -> str:
  if x is None:
    return NA
  if isinstance(x, (list, tuple)):
    return "-".join(f"{v:g}%" for v in x)
  return f"{x:g}%"


def _yes(b: Optional[bool], untrained: bool = False) -> str:
  """A verdict; n/a for every lesion claim when the ResNet is at chance level (`untrained`)."""
  if b is not None and untrained:
    return f"{NA} (ResNet not trained: full error > 50%)"
  return NA if b is None else ("yes" if b else "**no**")


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
    errs = [r["error"] for r in net["rows"] if lo <= r["kendall_tau"] < hi]
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
  out += [f"{i}. {r}" for i, r in enumerate(RULES, 1)]
  if inputs.get("trained_by"):  # which code on which machine trained each network
    errors = {"resnet": full, "plain": p["full"], **{r: _net(lesion[r]["single"])["full_error"] for r in RUNS[1:]}}
    out += ["", "## Networks", "", "| run | test error (as lesioned) | trained by (commit on machine: steps) |",
            "|---|---|---|"] + [f"| {r} | {_pct(errors.get(r))} | {t} |" for r, t in inputs["trained_by"].items()]

  he = numbers.get("he2016a_cifar10_error", {}).get(f"resnet{depth}")
  rows = [(f"full-network error (ResNet-{depth})",
           _ppct(le["full_error"]) + " (ResNet-110)" + (f"; He et al. ResNet-{depth}: {he:g}%" if he else ""),
           _pct(full), _yes(full * 100 <= 2 * (he or le["full_error"]))),
          (f"full-network error (plain-{depth})", NA, _pct(p["full"]), NA)]
  out += ["", "## Full network", "", _table(rows)]
  yes = functools.partial(_yes, untrained=full > 0.5)  # from here on: claims about lesions and paths

  rows = [("single deletion, typical block: mean (max)", _ppct(le["single_deletion_typical_range"]),
           f"{_pct(s['typical_mean'])} ({_pct(s['typical_max'])})",
           yes(None if s["typical_max"] is None else s["typical_max"] <= 2 * full)),
          ("single deletion, stage openers: mean", _ppct(le["single_deletion_stage_opener"]), _pct(s["opener_mean"]),
           yes(None if s["opener_mean"] is None or s["typical_mean"] is None
                else s["opener_mean"] > s["typical_mean"])),
          ("single deletion, plain net: mean", _ppct(le["plain_single_deletion"]), _pct(p["all_mean"]),
           yes(p["all_mean"] > 0.5))]
  out += ["", "## Deleting individual blocks (Fig. 3)", "", _table(rows)]

  km = k_means(_net(lesion["resnet"]["multi"]))
  paper_k = {int(k): v for k, v in le["k_deleted_mean_error"].items()}
  rows, prev = [], None
  for k in (1, 5, 10, 20):
    e = km.get(k)
    if e is None:
      holds = None
    elif k == 1:
      holds = e <= 2 * full
    elif k == 20:
      holds = None if km.get(10) is None else e >= km[10]
    else:
      holds = e < 0.5 and (prev is None or e >= prev)
    rows.append((f"mean error with k = {k} random blocks deleted", _ppct(paper_k.get(k)),
                 _pct(e) if e is not None else f"{NA} (not run: max k {max(km) if km else 0})", yes(holds)))
    prev = e if e is not None else prev
  extra = ", ".join(f"k={k}: {_pct(v)}" for k, v in km.items())
  out += ["", "## Deleting several blocks (Fig. 5a)", "", _table(rows), "", f"All k run: {extra}."]

  tm = tau_medians(_net(lesion["resnet"]["reorder"]))
  paper_tau = le["reorder_median_error_by_tau"]
  rows = []
  for name, _, _ in TAU_BINS:
    med, cnt = tm[name]
    if med is None:
      holds = None
    elif name == "tau>=0.95":
      holds = med <= 3 * full
    elif name == "0.90<=tau<0.95":
      holds = med < 0.5
    else:
      holds = None
    rows.append((f"median error of reorderings, Kendall {name}", _ppct(paper_tau.get(name)),
                 f"{_pct(med)} ({cnt} orders)", yes(holds)))
  out += ["", "## Reordering blocks (Fig. 5b)", "", _table(rows)]

  pj = inputs["paths"]
  r, nb = pj["effective_range"]["image"], pj["num_blocks"]
  rows = [("effective path lengths (share of gradient " f"{100 * r['share']:.0f}%)",
           f"{pn['effective_path_lengths'][0]}-{pn['effective_path_lengths'][1]} of 54",
           f"{r['lo']}-{r['hi']} of {nb}", yes(r["hi"] <= nb / 2)),
          ("share of all paths that are effective", f"{100 * pn['effective_share_of_paths']:.2f}%",
           f"{100 * r['path_fraction']:.2f}%", yes(r["path_fraction"] < 0.5))]
  fit = paths.exponential_fit(pj["sampled"]["image_mean"])
  rows.append(("gradient of one path vs its length (Fig. 6b)", pn["gradient_vs_length"],
               f"x{fit['factor_per_block']:.3g} per block, r^2 {fit['r2']:.3f}",
               yes(fit["factor_per_block"] < 1 and fit["r2"] >= 0.9)))
  out += ["", "## Effective paths (Fig. 6)", "", _table(rows)]

  sp, sd_n = numbers["short_paths"], numbers["stochastic_depth"]
  route_full = _net(lesion["short"]["single"])["full_error"]
  fwd_full = _net(lesion["short_fwd"]["single"])["full_error"]
  t = inputs["treatments"]
  best_fwd = min(t["unscaled_error"], t["scaled_error"])
  rows = [("short-path training (gradient routing): full error", _ppct(sp["short_path_training_error"]),
           _pct(route_full), yes(abs(route_full - full) <= 0.01)),
          ("short-path training (forward skip): full error, branches unscaled / scaled by "
           f"K/n = {t['num_active']}/{t['num_blocks']}", _ppct(sp["short_path_training_error"]),
           f"{_pct(t['unscaled_error'])} / {_pct(t['scaled_error'])}", yes(abs(best_fwd - full) <= 0.01)),
          ("normal training: full error", _ppct(sp["normal_training_error"]), _pct(full), NA)]
  out += ["", "## Short-path vs normal training (Sec. 5.3)", "", _table(rows), "",
          f"Lesion sweeps of the forward short-path network use its test-time treatment as trained "
          f"({'scaled' if t['trained_with'].get('scale_at_test') else 'unscaled'}: {_pct(fwd_full)})."]

  sd = single_stats(_net(lesion["sd"]["single"]))
  sd_rise = None if sd["typical_mean"] is None else sd["typical_mean"] - sd["full"]
  res_rise = None if s["typical_mean"] is None else s["typical_mean"] - full
  rows = [("stochastic depth: full error", _ppct(sd_n["veit_sd_network_error"]), _pct(sd["full"]), NA),
          ("stochastic depth: typical single-deletion error, mean (max)",
           _ppct(sd_n["veit_sd_single_deletion_range"]), f"{_pct(sd['typical_mean'])} ({_pct(sd['typical_max'])})",
           yes(None if sd_rise is None or res_rise is None else sd_rise <= res_rise)),
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
