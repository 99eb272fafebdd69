"""The depth series' predictions at n = 54 (study/predictions.py) on series whose answer is known."""
import numpy as np

from resnet_ensembles.study import predictions


def _summary(costs: dict) -> dict:
  nets = {f"net{n}": {"stored": {"n": n, "typical_mean_cost": c}} for n, c in costs.items()}
  return {"networks": nets, "paper_points": {"typical_mean_cost": 0.0057}}


def test_an_exact_power_law_predicts_itself_and_anchoring_moves_only_the_level():
  law = lambda n: 2.0 * n ** -1.5
  s = _summary({n: law(n) for n in (9, 15, 21, 27)})
  p = predictions.predict(s, list(s["networks"]), ["stored"])["stored"]["typical_mean_cost"]
  assert np.isclose(p["at_54"], law(54)) and np.allclose(p["interval"], law(54))   # no scatter, no width
  assert all(np.isclose(v, law(54)) for v in p["leave_one_out"].values()) and np.isclose(p["jackknife_se"], 0, atol=1e-12)
  anchor = {"n": 15, "typical_mean_cost": 3 * law(15)}                          # another recipe: 3x the level
  a = predictions.anchored({"stored": {"typical_mean_cost": p}}, anchor, "stored")["typical_mean_cost"]
  assert np.isclose(a["at_54"], 3 * law(54)) and np.allclose(a["interval"], 3 * law(54))


def test_scatter_widens_the_interval_and_the_comparison_says_inside_or_not():
  s = _summary({9: 0.2, 15: 0.05, 21: 0.06, 27: 0.02})
  p = predictions.predict(s, list(s["networks"]), ["stored"])
  lo, hi = p["stored"]["typical_mean_cost"]["interval"]
  assert lo < p["stored"]["typical_mean_cost"]["at_54"] < hi
  inside = predictions.compare(p, {"n": 54, "typical_mean_cost": (lo + hi) / 2}, "stored")["typical_mean_cost"]
  outside = predictions.compare(p, {"n": 54, "typical_mean_cost": 2 * hi}, "stored")["typical_mean_cost"]
  assert inside["holds"] is True and outside["holds"] is False
  assert predictions.compare(p, {}, "stored")["typical_mean_cost"]["holds"] is None
  assert "not measured yet" in predictions.render(predictions.compare(p, {}, "stored"), "stored", "net")
