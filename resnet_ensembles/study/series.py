"""The depth series: per network, the effects the paper reports, with standard errors, fits in depth n and
verdicts (a pure function of the JSONs `depth_series.run` writes, plus paper_numbers.json); its tables are
drawn by `series_table`.

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
from resnet_ensembles.study import stale_stats, verdicts as v
from resnet_ensembles.study.trends import fit


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


def deployed_error(folder: str, sweep: str, bn: str, net: dict) -> float:
  """The cost baseline of a sweep: the intact network as deployed (its stored statistics), from the stored twin
  sweep on the same test images; a recalibrated intact network is not the deployed one under
  bn=recalibrate_all."""
  if bn == "stored":
    return net["full_error"]
  stored = load_json(os.path.join(folder, f"{sweep}_stored.json"))
  return stored["networks"][0]["full_error"] if stored else net["full_error"]


def network_summary(folder: str, bn: str) -> dict:
  """The table's numbers (fractions of images; costs over the deployed intact network's error) for one bn."""
  out = {}
  single = load_json(os.path.join(folder, f"single_{bn}.json"))
  if single:
    net = single["networks"][0]
    s, full, n = single_stats(net), deployed_error(folder, "single", bn, net), net["num_blocks"]
    typical = [r["error"] - full for r in net["rows"] if not r.get("opener")]
    openers = [r["error"] - full for r in net["rows"] if r.get("opener")]
    images = single["test_images"]
    out.update(n=n, deletable=n - len(net["stage_openers"]), full=full, intact=net["full_error"],
               recalibration=net.get("recalibration"),
               full_se=float(np.sqrt(full * (1 - full) / images)), typical_mean_cost=float(np.mean(typical)),
               typical_mean_cost_se=standard_error(typical), typical_worst_cost=float(np.max(typical)),
               opener_cost=float(np.mean(openers)), typical_mean=s["typical_mean"], typical_max=s["typical_max"],
               opener_mean=s["opener_mean"])
  multi = load_json(os.path.join(folder, f"multi_{bn}.json"))
  if multi and "deletable" in out:
    by_k = errors_by_k(multi["networks"][0])
    out["k_full"] = deployed_error(folder, "multi", bn, multi["networks"][0])  # on the sweep's test images
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
    se = standard_error(near)
    out["reorder"] = {"full": deployed_error(folder, "reorder", bn, reorder["networks"][0]), "tau>=0.95": med(near),
                      "tau>=0.95_se": None if se is None else 1.2533 * se,
                      "tau>=0.95_count": len(near), "0.90<=tau<0.95": med(mid),
                      "identity_draws": len(reorder["networks"][0]["rows"]) - len(moved)}
    # costs over the deployed network on the sweep's own test images (k deletions and reorderings run on fewer)
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
    "reorder_cost": (lambda s: (s.get("reorder") or {}).get("tau>=0.95_cost"), "power",
                     lambda pe: pe["tau_cost"]["tau>=0.95"] / 100),
    "window_hi_frac": (lambda s: None if not s.get("paths") else s["paths"]["hi"] / s["paths"]["n"], "logit",
                       lambda pe: pe["window"][1]),
    "decay": (lambda s: None if not s.get("paths") else s["paths"]["decay"], "power", lambda pe: None),
}


def summarize(workdir: str, names: list[str], fit_names: list[str], bns: list[str],
              folders: Optional[dict[str, str]] = None) -> dict:
  """Per network and bn: the numbers, their verdicts; per bn: each trend's fit over `fit_names`. A network's
  sweeps are in <workdir>/<name>/, or in `folders[name]` (`depth_series.table_folders`)."""
  pe = v.paper_effects(paper.numbers())
  where = {name: (folders or {}).get(name, os.path.join(workdir, name)) for name in names}
  nets = {name: {bn: network_summary(where[name], bn) for bn in bns} for name in names}
  for name in nets:
    for bn in bns:
      nets[name][bn]["verdicts"] = _verdicts(nets[name][bn], pe)
      if bn != "stored":
        nets[name][bn]["stale"] = stale_stats.network_effect(load_json, where[name], bn)
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
