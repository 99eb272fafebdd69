"""What the depth series predicts at the paper's n = 54, with its uncertainty, and how a measured network compares.

The series fits each effect through four networks (`series.TRENDS`, `trends.fit`); a prediction from four points
is only as good as the points agree. Two honest measures of that, both in the fit's straight-line space and
mapped back:
  leave-one-out   the prediction of each three-network fit; their spread (and the jackknife standard error
                  sqrt((m - 1) / m * sum (p_i - mean)^2)) says how much one network moves the answer;
  90% interval    the regression's prediction interval for a new network at n = 54 (Student t with m - 2
                  degrees of freedom, the residual scatter and the distance of log 54 from the fitted depths):
                  where a fifth network of the same recipe would fall.
A measured effect "holds the prediction" when it lies inside the 90% interval. Written before the network is
measured (`predict`), then joined with the measurement (`compare`).

The imported networks share one recipe (fully trained elsewhere, post-activation blocks); a network trained here
with another recipe starts from another level. `anchored` keeps the series' depth exponent but takes the level
from a network of that recipe at a smaller depth (the own 40-epoch ResNet-32 for the own ResNet-110): the same
straight line moved through that point, its interval from the slope's 90% confidence interval.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import stats

from resnet_ensembles.study import series, trends

LEVEL = 0.90
# effect -> what the comparison table calls it and how its values print (costs in points, shares, windows)
LABELS = {"typical_mean_cost": "typical single deletion, cost", "typical_worst_cost": "worst typical deletion, cost",
          "opener_cost": "stage opener deleted, cost", "k_share_0.1": "10% of blocks deleted, share of the way to chance",
          "k_share_0.2": "20% deleted, share to chance", "k_share_0.4": "40% deleted, share to chance",
          "reorder_cost": "reordering at tau >= 0.95, median cost", "window_hi_frac": "effective window's upper end / n",
          "decay": "gradient decay per block of path length"}
IN_POINTS = ("typical_mean_cost", "typical_worst_cost", "opener_cost", "reorder_cost")


def _interval(ns: np.ndarray, ys: np.ndarray, form: str, f: dict) -> Optional[list[float]]:
  """The LEVEL prediction interval at n = 54 in the fit's line space, mapped back (None below 3 points)."""
  x, y = trends._transform(ns, ys, form)
  m = x.size
  if m < 3:
    return None
  resid = y - (f["intercept"] + f["slope"] * x)
  s = np.sqrt(np.sum(resid ** 2) / (m - 2))
  x0 = np.log(trends.PAPER_N) if form != "linear" else float(trends.PAPER_N)
  half = stats.t.ppf(0.5 + LEVEL / 2, m - 2) * s * np.sqrt(1 + 1 / m + (x0 - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
  # the interval shifts the fitted line's intercept by +-half; trends.predict maps it back as it maps the fit
  return [float(trends.predict(dict(f, intercept=f["intercept"] + d), trends.PAPER_N)) for d in (-half, half)]


def predict(summary: dict, fit_names: list[str], bns: list[str]) -> dict:
  """bn -> effect -> {at_54, leave_one_out, jackknife_se, interval, paper, points} from a `series.summarize`
  summary over the networks `fit_names`."""
  out = {}
  for bn in bns:
    out[bn] = {}
    rows = [(name, summary["networks"][name][bn]) for name in fit_names if summary["networks"][name][bn].get("n")]
    for metric, (get, form, _) in series.TRENDS.items():
      pts = [(name, s["n"], get(s)) for name, s in rows if get(s) is not None]
      ns = np.array([p[1] for p in pts], np.float64)
      ys = np.array([p[2] for p in pts], np.float64)
      f = trends.fit(ns, ys, form)
      if f is None:
        out[bn][metric] = None
        continue
      ok = np.isfinite(ys) & ((ys > 0) if form == "power" else (ys > 0) & (ys < 1) if form == "logit" else True)
      loo = {}
      for i, (name, _, _) in enumerate(pts):
        keep = np.arange(len(pts)) != i
        g = trends.fit(ns[keep], ys[keep], form)
        loo[name] = None if g is None else g["at_54"]
      x, y = trends._transform(ns[ok], ys[ok], form)
      line = stats.linregress(x, y)
      t = stats.t.ppf(0.5 + LEVEL / 2, x.size - 2)
      vals = np.array([p for p in loo.values() if p is not None])
      jack = float(np.sqrt((vals.size - 1) / vals.size * np.sum((vals - vals.mean()) ** 2))) if vals.size > 1 else None
      out[bn][metric] = {"form": form, "at_54": f["at_54"], "leave_one_out": loo, "jackknife_se": jack,
                         "interval": _interval(ns[ok], ys[ok], form, f), "level": LEVEL, "slope": f["slope"],
                         "slope_interval": [float(line.slope - t * line.stderr), float(line.slope + t * line.stderr)],
                         "paper": summary["paper_points"].get(metric), "points": {p[0]: [p[1], p[2]] for p in pts}}
  return out


def anchored(predicted: dict, anchor: dict, bn: str) -> dict:
  """bn's predictions moved through `anchor` (a `series.network_summary` of a smaller network of another
  recipe): effect -> the same dict shape as `predict`'s, at_54 and interval from the slope and its interval."""
  out = {}
  for metric, p in predicted[bn].items():
    value = series.TRENDS[metric][0](anchor) if p and anchor.get("n") else None
    if value is None or p["form"] == "linear" or not (value > 0 and (p["form"] == "power" or value < 1)):
      out[metric] = None
      continue
    z = trends._transform(np.array([anchor["n"]], np.float64), np.array([value]), p["form"])[1][0]
    # the fitted line with its slope moved through the anchor: intercept = z - slope log n_anchor
    at = lambda slope: float(trends.predict({"form": p["form"], "slope": slope,
                                             "intercept": z - slope * np.log(anchor["n"])}, trends.PAPER_N))
    ends = sorted(at(b) for b in p["slope_interval"])
    loo_slopes = {k: v for k, v in p["leave_one_out"].items()}
    out[metric] = dict(p, at_54=at(p["slope"]), interval=ends, jackknife_se=None, leave_one_out=loo_slopes,
                       anchor={"n": anchor["n"], "value": value})
  return out


def compare(predicted: dict, measured: dict, bn: str) -> dict:
  """effect -> {prediction, interval, measured, measured_se, paper, holds} for one network's summary
  (`series.network_summary`) under one BatchNorm treatment; measured None while its sweep is not finished."""
  ses = {"typical_mean_cost": measured.get("typical_mean_cost_se"),
         "reorder_cost": (measured.get("reorder") or {}).get("tau>=0.95_se")}
  for f in ("0.1", "0.2", "0.4"):
    e = (measured.get("k") or {}).get(f)
    ses[f"k_share_{f}"] = None if not e or e.get("se") is None else e["se"] / (0.9 - measured["k_full"])
  out = {}
  for metric, p in predicted[bn].items():
    if p is None:
      continue
    value = series.TRENDS[metric][0](measured) if measured else None
    lo, hi = p["interval"] or (None, None)
    out[metric] = {"prediction": p["at_54"], "interval": p["interval"], "jackknife_se": p["jackknife_se"],
                   "measured": value, "measured_se": ses.get(metric), "paper": p["paper"],
                   "holds": None if value is None or lo is None else bool(lo <= value <= hi)}
  return out


def _fmt(metric: str, x: Optional[float]) -> str:
  if x is None:
    return "-"
  return f"{100 * x:+.2f}" if metric in IN_POINTS else f"x{x:.3f}" if metric == "decay" else f"{x:.3f}"


def render(table: dict, bn: str, measured_name: str) -> str:
  """One markdown table: effect | prediction (jackknife se) | 90% interval | measured (se) | paper | holds."""
  lines = [f"| effect ({bn} BatchNorm statistics; costs in points) | predicted at n = 54 (jackknife se) | "
           f"{int(100 * LEVEL)}% interval | {measured_name} measured (se) | paper, ResNet-110 | inside the interval? |",
           "| --- | ---: | ---: | ---: | ---: | --- |"]
  for metric, r in table.items():
    scale = 100 if metric in IN_POINTS else 1
    se = lambda x: "" if x is None else f" ({scale * x:.2f})" if metric in IN_POINTS else f" ({x:.3f})"
    interval = "-" if not r["interval"] else f"{_fmt(metric, r['interval'][0])} .. {_fmt(metric, r['interval'][1])}"
    holds = "not measured yet" if r["measured"] is None else "yes" if r["holds"] else "no"
    lines.append(f"| {LABELS[metric]} | {_fmt(metric, r['prediction'])}{se(r['jackknife_se'])} | {interval} | "
                 f"{_fmt(metric, r['measured'])}{se(r['measured_se']) if r['measured'] is not None else ''} | "
                 f"{_fmt(metric, r['paper'])} | {holds} |")
  return "\n".join(lines) + "\n"
