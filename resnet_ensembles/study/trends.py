"""Trends in depth n fitted through a few networks, and what each predicts at the paper's n = 54.

Three forms, each a straight line after a transform (`scipy.stats.linregress`), so r^2 and the slope read the
same way for all: `power` y = a n^b (log y on log n) for costs that shrink towards 0 with depth; `logit`
logit y = a + b log n for shares bounded by 0 and 1; `linear` y = a + b n where no curve is argued for.
Fewer than three usable points give no trend (None), never a line through two.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import special, stats

PAPER_N = 54


FORMS = ("power", "logit", "linear")


def _transform(ns, ys, form: str):
  if form == "power":
    return np.log(ns), np.log(ys)
  if form == "logit":
    return np.log(ns), special.logit(ys)
  return ns, ys


def predict(f: dict, ns) -> np.ndarray:
  """The fitted trend `f` (from `fit`) at depths `ns`."""
  ns = np.asarray(ns, np.float64)
  z = f["intercept"] + f["slope"] * (ns if f["form"] == "linear" else np.log(ns))
  return np.exp(z) if f["form"] == "power" else special.expit(z) if f["form"] == "logit" else z


def fit(ns, ys, form: str) -> Optional[dict]:
  """`power` (y = a n^b over positive y), `logit` (logit y = a + b log n over y in (0, 1)) or `linear`
  (y = a + b n); with r^2 (of the transformed line) and the value at n = 54."""
  if form not in FORMS:
    raise ValueError(f"fit form must be one of {FORMS}, got {form!r}")
  ns, ys = np.asarray(ns, np.float64), np.asarray(ys, np.float64)
  ok = np.isfinite(ys) & ((ys > 0) if form == "power" else (ys > 0) & (ys < 1) if form == "logit" else True)
  if ok.sum() < 3:
    return None
  r = stats.linregress(*_transform(ns[ok], ys[ok], form))
  f = {"form": form, "slope": float(r.slope), "intercept": float(r.intercept), "r2": float(r.rvalue ** 2),
       "points": int(ok.sum())}
  f["at_54"] = float(predict(f, PAPER_N))
  grid = np.linspace(ns[ok].min(), PAPER_N, 50)  # the figure draws the trend from here (plots stay below study)
  f["curve"] = {"n": grid.tolist(), "y": predict(f, grid).tolist()}
  return f
