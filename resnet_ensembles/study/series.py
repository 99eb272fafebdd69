"""The depth series: per network, the effects the paper reports, with standard errors, fits in depth n and
verdicts (a pure function of the JSONs `depth_series.run` writes, plus paper_numbers.json).

Standard errors: of a mean over lesions (blocks, or random samples at one k), the standard deviation over
lesions / sqrt(count); of a median, 1.2533 x that (normal approximation); of one error rate on N images,
sqrt(p (1 - p) / N). Trends are fitted over the networks of one training recipe (`config.fit_networks`):
costs that shrink towards 0 with depth (single deletions, openers, reorderings; points over the full network)
as a power law c = a n^b, a straight line in log-log whose slope says how fast resilience grows with depth;
k deletions at a fixed fraction of the blocks, which delete more blocks as n grows and cannot cost more than
the way to chance, as the share of that way, r = cost / (chance - full error) in (0, 1), logistic in log n
(logit r = a + b log n; a power law there predicted 103 points at n = 54, more than there is room for); the
window's upper end as a fraction of n, also in (0, 1), logistic in log n, and the per-block decay factor, a
positive ratio, as a power law (straight lines in n predicted a window ending at -0.38 n and a decay factor of
-1.39 at n = 54, outside what either can be). Each fit (`study.trends`) states its prediction at n = 54 beside
the paper's ResNet-110.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from resnet_ensembles import paper
from resnet_ensembles.lesion.summary import errors_by_k, reorderings, single_stats
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.study import verdicts as v
from resnet_ensembles.study.trends import PAPER_N, fit


def standard_error(values) -> Optional[float]:
  """Of a mean over `values` (None for fewer than two)."""
  values = np.asarray(values, np.float64)
  return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else None


def load_json(path: str) -> Optional[dict]:
  """A finished sweep's JSON, or None where it is not (yet) written: the summaries draw from what exists."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def network_summary(folder: str, bn: str) -> dict:
  """The table's numbers (fractions of images; costs over the network's own full error) for one bn."""
  out = {}
  single = load_json(os.path.join(folder, f"single_{bn}.json"))
  if single:
    net = single["networks"][0]
    s, full, n = single_stats(net), net["full_error"], net["num_blocks"]
    typical = [r["error"] - full for r in net["rows"] if not r.get("opener")]
    openers = [r["error"] - full for r in net["rows"] if r.get("opener")]
    images = single["test_images"]
    out.update(n=n, deletable=n - len(net["stage_openers"]), full=full,
               full_se=float(np.sqrt(full * (1 - full) / images)), typical_mean_cost=float(np.mean(typical)),
               typical_mean_cost_se=standard_error(typical), typical_worst_cost=float(np.max(typical)),
               opener_cost=float(np.mean(openers)), typical_mean=s["typical_mean"], typical_max=s["typical_max"],
               opener_mean=s["opener_mean"])
  multi = load_json(os.path.join(folder, f"multi_{bn}.json"))
  if multi and "deletable" in out:
    by_k = errors_by_k(multi["networks"][0])
    out["k_full"] = multi["networks"][0]["full_error"]  # on the sweep's own (possibly fewer) test images
    ks = v.k_at_fractions(out["deletable"], sorted(by_k))
    out["k"] = {str(f): None if k is None else {"k": k, "error": float(np.mean(by_k[k])), "se": standard_error(by_k[k]),
                                                "cost": float(np.mean(by_k[k])) - out["k_full"]}
                for f, k in ks.items()}
    for e in filter(None, out["k"].values()):  # the share of the way from the full error to chance
      e["share"] = e["cost"] / (v.CHANCE - out["k_full"])
  reorder = load_json(os.path.join(folder, f"reorder_{bn}.json"))
  if reorder:
    moved = reorderings(reorder["networks"][0])  # the identity draws left out
    near = [r["error"] for r in moved if r["kendall_tau"] >= 0.95]
    mid = [r["error"] for r in moved if 0.90 <= r["kendall_tau"] < 0.95]
    med = lambda xs: None if not xs else float(np.median(xs))
    out["reorder"] = {"full": reorder["networks"][0]["full_error"], "tau>=0.95": med(near), "tau>=0.95_se": None if standard_error(near) is None else 1.2533 * standard_error(near),
                      "tau>=0.95_count": len(near), "0.90<=tau<0.95": med(mid),
                      "identity_draws": len(reorder["networks"][0]["rows"]) - len(moved)}
    # costs over the sweep's own full network (k deletions and reorderings run on fewer test images)
    out["reorder"]["tau>=0.95_cost"] = None if not near else med(near) - out["reorder"]["full"]
  pj = load_json(os.path.join(folder, "paths.json"))
  if pj:
    r = pj["effective_range"]["image"]
    out["paths"] = {"lo": r["lo"], "hi": r["hi"], "share": r["path_fraction"], "n": pj["num_blocks"],
                    "decay": paths.exponential_fit(pj["sampled"]["image_mean"])["factor_per_block"]}
  return out


def _verdicts(s: dict, pe: dict) -> dict:
  if "full" not in s:
    return {}
  untrained = s["full"] > 0.5
  out = {"single_typical": v.single_typical(s["full"], s["typical_mean"], s["typical_max"], pe, untrained),
         "single_opener": v.single_opener(s["full"], s["opener_mean"], s["typical_mean"], pe, untrained)}
  if s.get("k"):
    errors = {float(f): None if e is None else e["error"] for f, e in s["k"].items()}
    out["k"] = {str(f): x for f, x in v.k_deleted(s["k_full"], errors, pe, untrained).items()}
  if s.get("reorder"):
    out["reorder"] = v.reorder(s["reorder"]["full"], s["reorder"], pe, untrained)
  if s.get("paths"):
    p = s["paths"]
    out["window"] = v.window(p["lo"], p["hi"], p["n"], pe, untrained)
  return out


TRENDS = {  # metric -> (how to read it from a summary, fit form, the paper's value at n = 54)
    "typical_mean_cost": (lambda s: s.get("typical_mean_cost"), "power", lambda pe: pe["typical_mean_cost"] / 100),
    "typical_worst_cost": (lambda s: s.get("typical_worst_cost"), "power", lambda pe: pe["typical_worst_cost"] / 100),
    "opener_cost": (lambda s: s.get("opener_cost"), "power", lambda pe: pe["opener_cost"] / 100),
    **{f"k_share_{f}": ((lambda f: lambda s: ((s.get("k") or {}).get(str(f)) or {}).get("share"))(f), "logit",
                        (lambda f: lambda pe: pe["k_cost"][f] / (100 * v.CHANCE - pe["full"]))(f))
       for f in v.K_FRACTIONS},
    "reorder_cost": (lambda s: (s.get("reorder") or {}).get("tau>=0.95_cost"), "power", lambda pe: pe["tau_cost"]["tau>=0.95"] / 100),
    "window_hi_frac": (lambda s: None if not s.get("paths") else s["paths"]["hi"] / s["paths"]["n"], "logit",
                       lambda pe: pe["window"][1]),
    "decay": (lambda s: None if not s.get("paths") else s["paths"]["decay"], "power", lambda pe: None),
}


TREND_NAMES = {"typical_mean_cost": "typical single deletion, mean cost (pts)",
               "typical_worst_cost": "typical single deletion, worst cost (pts)",
               "opener_cost": "stage opener, cost (pts)",
               **{f"k_share_{f}": f"k = {f:.0%} of deletable: % of the way to chance" for f in v.K_FRACTIONS},
               "reorder_cost": "reorderings, tau >= 0.95: median cost (pts)",
               "window_hi_frac": "effective window's upper end / n", "decay": "gradient decay per block"}


def summarize(workdir: str, names: list[str], fit_names: list[str], bns: list[str]) -> dict:
  """Per network and bn: the numbers, their verdicts; per bn: each trend's fit over `fit_names`."""
  pe = v.paper_effects(paper.numbers())
  nets = {name: {bn: network_summary(os.path.join(workdir, name), bn) for bn in bns} for name in names}
  for name in nets:
    for bn in bns:
      nets[name][bn]["verdicts"] = _verdicts(nets[name][bn], pe)
  fits = {}
  for bn in bns:
    rows = [nets[name][bn] for name in fit_names if nets[name][bn].get("n")]
    fits[bn] = {}
    for metric, (get, form, paper_at) in TRENDS.items():
      f = fit([s["n"] for s in rows], [get(s) if get(s) is not None else np.nan for s in rows], form)
      if f:
        f["paper"] = paper_at(pe)
      fits[bn][metric] = f
  paper_points = {metric: paper_at(pe) for metric, (_, _, paper_at) in TRENDS.items()}  # drawn with or without a fit
  return {"networks": nets, "fits": fits, "fit_networks": fit_names, "paper_effects": pe, "paper_points": paper_points}


def _p(x: Optional[float], se: Optional[float] = None, signed: bool = False) -> str:
  if x is None:
    return "n/a"
  body = f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"
  return body + (f" ± {100 * se:.2f}" if se is not None else "")


def _paper_row(pe: dict) -> str:
  """The paper's ResNet-110 as the table's last row (canonical CIFAR-10; its effects in points, as published)."""
  n, full = PAPER_N, pe["full"]
  ks = " / ".join(f"{full + pe['k_cost'][f]:.2f} (k={k})" for f, k in zip(v.K_FRACTIONS, (5, 10, 20)))
  lo, hi = (round(x * n) for x in pe["window"])
  share = "" if pe.get("window_share") is None else f" ({100 * pe['window_share']:.2f}%)"
  return (f"| **paper: pre-act ResNet-110** (Veit et al., canonical CIFAR-10) | {n} | {full:.2f} | "
          f"{pe['typical_mean_cost']:+.2f} ({pe['typical_worst_cost']:+.2f}) | {pe['opener_cost']:+.2f} | {ks} | "
          f"{pe['tau_cost']['tau>=0.95']:+.2f} | {lo}-{hi} of {n}{share} | exponential |")


def render(summary: dict, labels: dict[str, str]) -> str:
  """The depth-series table (markdown): one block of rows per BatchNorm treatment, the fits below."""
  out = []
  for bn in next(iter(summary["networks"].values())):
    out += [f"### {bn} BatchNorm statistics", "",
            "| network | n | full error % | typical single-deletion cost, mean (worst), pts | opener cost, pts | "
            "k at 10% / 20% / 40% of deletable: error % | reorder median, tau >= 0.95: cost, pts | "
            "effective window (share of paths) | decay per block |",
            "|---|---:|---:|---|---:|---|---|---|---:|"]
    for name, per_bn in summary["networks"].items():
      s, vd = per_bn[bn], per_bn[bn].get("verdicts", {})
      if not s.get("n"):
        out.append(f"| {labels.get(name, name)} | not yet swept |||||||")
        continue
      ks = " / ".join("n/a" if not e else f"{_p(e['error'], e['se'])} (k={e['k']})" for e in s.get("k", {}).values())
      r = s.get("reorder") or {}
      p = s.get("paths")
      window = "n/a" if not p else f"{p['lo']}-{p['hi']} of {p['n']} ({100 * p['share']:.1f}%) [{vd.get('window')}]"
      decay = "n/a" if not p else f"x{p['decay']:.3f}"
      out.append(f"| {labels.get(name, name)} | {s['n']} | {_p(s['full'], s['full_se'])} | "
                 f"{_p(s['typical_mean_cost'], s['typical_mean_cost_se'], True)} ({_p(s['typical_worst_cost'], None, True)})"
                 f" [{vd.get('single_typical')}] | {_p(s['opener_cost'], None, True)} [{vd.get('single_opener')}] | "
                 f"{ks or 'n/a'} | {_p(r.get('tau>=0.95_cost'), r.get('tau>=0.95_se'), True)} [{(vd.get('reorder') or {}).get('tau>=0.95', 'n/a')}] | "
                 f"{window} | {decay} |")
    out.append(_paper_row(summary["paper_effects"]))
    out += ["", f"Trends over {', '.join(labels.get(x, x) for x in summary['fit_networks'])} "
            f"({bn} BN), as far as swept (points: the networks a fit rests on), predicted at n = 54 beside the "
            f"paper's ResNet-110:", "",
            "| metric | form | points | slope | r^2 | at n = 54 | paper (n = 54) |", "|---|---|---:|---:|---:|---:|---:|"]
    for metric, f in summary["fits"][bn].items():
      if f:
        scale = 1 if metric in ("window_hi_frac", "decay") else 100
        paper_v = "n/a" if f["paper"] is None else f"{scale * f['paper']:.3g}"
        out.append(f"| {TREND_NAMES.get(metric, metric)} | {f['form']} | {f['points']} | {f['slope']:.3g} | {f['r2']:.2f} | {scale * f['at_54']:.3g} | {paper_v} |")
    if not any(summary["fits"][bn].values()):
      out.append("| no trend yet: a fit needs the metric on at least 3 of these networks |||||||")
    out.append("")
  return "\n".join(out)
