"""The depth series as markdown: `glance` (one row per network and BatchNorm treatment, the paper's ResNet-110
and the fits' values at n = 54 beside them; the README's table) and `render` (series.md: that table, then per
treatment every number with its standard error and verdict, and each trend's fit).
"""
from __future__ import annotations

from typing import Optional, Sequence

from resnet_ensembles.study import verdicts as v
from resnet_ensembles.study.trends import PAPER_N

# The treatments the README's glance shows (series.md shows all): the deployed network's statistics, and
# statistics re-estimated from each lesion's first changed position on.
README_BNS = ("stored", "recalibrate")

BN_NAMES = {"stored": "stored", "recalibrate": "recalibrated from the lesion on",
            "recalibrate_all": "all re-estimated"}
TREND_NAMES = {"typical_mean_cost": "typical single deletion, mean cost (pts)",
               "typical_worst_cost": "typical single deletion, worst cost (pts)",
               "opener_cost": "stage opener, cost (pts)",
               **{f"k_share_{f}": f"k = {f:.0%} of deletable: % of the way to chance" for f in v.K_FRACTIONS},
               "reorder_cost": "reorderings, tau >= 0.95: median cost (pts)",
               "window_hi_frac": "effective window's upper end / n", "decay": "gradient decay per block"}


def _p(x: Optional[float], se: Optional[float] = None, signed: bool = False) -> str:
  if x is None:
    return "n/a"
  body = f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"
  return body + (f" ± {100 * se:.2f}" if se is not None else "")


def _full(s: dict) -> str:
  """The deployed network's error, and the intact network's own where a treatment shifts it."""
  shifted = s.get("intact") is not None and s["intact"] != s["full"]
  return _p(s["full"]) + (f" (intact re-estimated: {_p(s['intact'])})" if shifted else "")


def _share(e: Optional[dict]) -> str:
  return "n/a" if not e or e.get("share") is None else f"{100 * e['share']:.0f}%"


def _effect_cells(e: Optional[dict]) -> str:
  """A group's stored -> recalibrated error, its cost over the deployed network, the mean change per lesion."""
  if not e:
    return "n/a | n/a | n/a"
  return (f"{_p(e['stored_error'])} -> {_p(e['recalibrated_error'])} | {_p(e['cost'], e['cost_se'], True)} | "
          f"{_p(e['change'], e['change_se'], True)} ({_share(e)})")


def stale_table(summary: dict, labels: dict[str, str], bn: str) -> list[str]:
  """Per network, in absolute errors against the deployed network (stored statistics): what recalibrating
  under `bn` does to a typical deletion, a stage opener and k deletions, and the share of the stored cost it
  removes: the part of a deletion's damage that stale statistics explain."""
  out = ["| network | n | deployed error % | typical deletion: error %, stored -> recalibrated | cost over deployed, "
         "pts | change per deletion, pts (share of stored cost) | stage opener: error % | cost, pts | change, pts "
         "(share) | k at 10% / 20% / 40% of deletable: share of stored cost |",
         "|---|---:|---:|---|---|---|---|---|---|---|"]
  for name, per_bn in summary["networks"].items():
    e = (per_bn.get(bn) or {}).get("stale")
    if not e:
      out.append(f"| {labels.get(name, name)} | not yet swept |||||||||")
      continue
    ks = " / ".join("n/a" if not x else f"{_share(x)} (k={x['k']})" for x in (e.get("k") or {}).values()) or "n/a"
    out.append(f"| {labels.get(name, name)} | {per_bn[bn].get('n', '')} | {_p(e['deployed'])} | "
               f"{_effect_cells(e['typical'])} | {_effect_cells(e['opener'])} | {ks} |")
  return out


def _paper_cells(pe: dict, of_n: str) -> tuple[str, str]:
  """The paper's k-deletion errors and effective window (with its share of paths), as both tables show them."""
  ks = " / ".join(f"{pe['full'] + pe['k_cost'][f]:.2f} (k={k})" for f, k in zip(v.K_FRACTIONS, (5, 10, 20)))
  lo, hi = (round(x * PAPER_N) for x in pe["window"])
  share = "" if pe.get("window_share") is None else f" ({100 * pe['window_share']:.2f}%)"
  return ks, f"{lo}-{hi}{of_n}{share}"


def _paper_row(pe: dict) -> str:
  """The paper's ResNet-110 as the table's last row (canonical CIFAR-10; its effects in points, as published)."""
  ks, window = _paper_cells(pe, f" of {PAPER_N}")
  return (f"| **paper: pre-act ResNet-110** (Veit et al., canonical CIFAR-10) | {PAPER_N} | {pe['full']:.2f} | "
          f"{pe['typical_mean_cost']:+.2f} ({pe['typical_worst_cost']:+.2f}) | {pe['opener_cost']:+.2f} | {ks} | "
          f"{pe['tau_cost']['tau>=0.95']:+.2f} | {window} | exponential |")


def _k_cells(s: dict) -> str:
  return " / ".join("n/a" if not e else f"{_p(e['error'], e['se'])} (k={e['k']})" for e in s.get("k", {}).values())


def _glance_row(label: str, n, bn: str, s: dict, first: bool) -> str:
  """`first`: the network's first row; the path analysis (no BatchNorm choice) is shown there only."""
  r, p = s.get("reorder") or {}, s.get("paths")
  paths = ("n/a | n/a" if not p else f"{p['lo']}-{p['hi']} ({100 * p['share']:.1f}%) | x{p['decay']:.3f}"
           if first else "same | same")
  return (f"| {label} | {n} | {BN_NAMES.get(bn, bn)} | {_full(s)} | "
          f"{_p(s['typical_mean_cost'], s['typical_mean_cost_se'], True)} "
          f"({_p(s['typical_worst_cost'], None, True)}) | {_p(s['opener_cost'], None, True)} | "
          f"{_k_cells(s) or 'n/a'} | "
          f"{_p(r.get('tau>=0.95_cost'), r.get('tau>=0.95_se'), True)} | {paths} |")


def _fit_row(fits: dict, bn: str, first: bool) -> str:
  def at(metric: str, scale: float = 100, fmt: str = "{:+.2f}") -> str:
    f = fits.get(metric)
    return "n/a" if not f else fmt.format(scale * f["at_54"])
  ks = " / ".join(at(f"k_share_{f}", fmt="{:.1f}") for f in v.K_FRACTIONS)
  window = fits.get("window_hi_frac")
  hi = "n/a" if not window else f"up to {window['at_54'] * PAPER_N:.0f}"
  paths = f"{hi} | {at('decay', 1, 'x{:.3f}')}" if first else "same | same"
  return (f"| *trend fits at n = 54* | {PAPER_N} | {BN_NAMES.get(bn, bn)} | | {at('typical_mean_cost')} "
          f"({at('typical_worst_cost')}) | {at('opener_cost')} | {ks}% of the way to chance | "
          f"{at('reorder_cost')} | {paths} |")


def glance(summary: dict, labels: dict[str, str], bns: Optional[Sequence[str]] = None) -> str:
  """One row per network and BatchNorm treatment (effects in points over the deployed network's error, with
  standard errors), the paper's ResNet-110, and each treatment's trend fits (over `fit_networks`, as far as
  swept; forms, points and r^2 in `render`'s fit tables) evaluated at n = 54. `bns`: only these treatments
  (the README shows stored and downstream-recalibrated statistics; series.md shows every treatment swept)."""
  keep = lambda bn: bns is None or bn in bns
  pe = summary["paper_effects"]
  out = ["| network | n | BN | full error % | typical single deletion: mean cost (worst), pts | stage opener, pts | "
         "10% / 20% / 40% of deletable blocks deleted: error % | reorder, tau >= 0.95: median cost, pts | "
         "effective window (share of paths) | gradient decay per block |",
         "|---|---:|---|---:|---|---:|---|---|---|---:|"]
  for name, per_bn in summary["networks"].items():
    label = labels.get(name, name)
    for i, (bn, s) in enumerate((bn, s) for bn, s in per_bn.items() if keep(bn)):
      out.append(_glance_row(label, s["n"], bn, s, i == 0) if s.get("n")
                 else f"| {label} | | {BN_NAMES.get(bn, bn)} | not yet swept |||||||")
  ks, window = _paper_cells(pe, "")
  out.append(f"| **paper: pre-act ResNet-110** (canonical CIFAR-10) | {PAPER_N} | stored | {pe['full']:.2f} | "
             f"{pe['typical_mean_cost']:+.2f} ({pe['typical_worst_cost']:+.2f}) | {pe['opener_cost']:+.2f} | {ks} | "
             f"{pe['tau_cost']['tau>=0.95']:+.2f} | {window} | exponential |")
  for i, (bn, fits) in enumerate((bn, f) for bn, f in summary["fits"].items() if keep(bn)):
    out.append(_fit_row(fits, bn, i == 0))
  return "\n".join(out)


def render(summary: dict, labels: dict[str, str]) -> str:
  """series.md: the glance table, then one block of rows per BatchNorm treatment, the fits below."""
  out = ["### At a glance", "", glance(summary, labels), ""]
  for bn in next(iter(summary["networks"].values())):
    out += [f"### {bn} BatchNorm statistics ({BN_NAMES.get(bn, bn)})", "",
            "| network | n | full error % | typical single-deletion cost, mean (worst), pts | opener cost, pts | "
            "k at 10% / 20% / 40% of deletable: error % | reorder median, tau >= 0.95: cost, pts | "
            "effective window (share of paths) | decay per block |",
            "|---|---:|---:|---|---:|---|---|---|---:|"]
    for name, per_bn in summary["networks"].items():
      s, vd = per_bn[bn], per_bn[bn].get("verdicts", {})
      if not s.get("n"):
        out.append(f"| {labels.get(name, name)} | not yet swept |||||||")
        continue
      ks = _k_cells(s)
      r, reorder_verdict = s.get("reorder") or {}, (vd.get("reorder") or {}).get("tau>=0.95", "n/a")
      p = s.get("paths")
      window = "n/a" if not p else f"{p['lo']}-{p['hi']} of {p['n']} ({100 * p['share']:.1f}%) [{vd.get('window')}]"
      decay = "n/a" if not p else f"x{p['decay']:.3f}"
      out.append(f"| {labels.get(name, name)} | {s['n']} | {_p(s['full'], s['full_se'])} | "
                 f"{_p(s['typical_mean_cost'], s['typical_mean_cost_se'], True)} "
                 f"({_p(s['typical_worst_cost'], None, True)}) [{vd.get('single_typical')}] | "
                 f"{_p(s['opener_cost'], None, True)} [{vd.get('single_opener')}] | {ks or 'n/a'} | "
                 f"{_p(r.get('tau>=0.95_cost'), r.get('tau>=0.95_se'), True)} [{reorder_verdict}] | {window} | "
                 f"{decay} |")
    out.append(_paper_row(summary["paper_effects"]))
    out += ["", f"Trends over {', '.join(labels.get(x, x) for x in summary['fit_networks'])} "
            f"({bn} BN), as far as swept (points: the networks a fit rests on), predicted at n = 54 beside the "
            f"paper's ResNet-110:", "",
            "| metric | form | points | slope | r^2 | at n = 54 | paper (n = 54) |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for metric, f in summary["fits"][bn].items():
      if f:
        scale = 1 if metric in ("window_hi_frac", "decay") else 100
        paper_v = "n/a" if f["paper"] is None else f"{scale * f['paper']:.3g}"
        out.append(f"| {TREND_NAMES.get(metric, metric)} | {f['form']} | {f['points']} | {f['slope']:.3g} | "
                   f"{f['r2']:.2f} | {scale * f['at_54']:.3g} | {paper_v} |")
    if not any(summary["fits"][bn].values()):
      out.append("| no trend yet: a fit needs the metric on at least 3 of these networks |||||||")
    out.append("")
    if bn != "stored":
      out += [f"What stale statistics explain ({BN_NAMES.get(bn, bn)}; absolute errors, every cost over the "
              f"deployed network, the intact one with its stored statistics; k deletions on the sweeps' test "
              f"images):", "", *stale_table(summary, labels, bn), ""]
  return "\n".join(out)
