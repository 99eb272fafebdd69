"""The language model's study as markdown (study/llm_comparison writes it into summary.md): the comparison table
beside the image networks, in each network's own units and in shares of the way to chance, and the language
model's own sweeps (costs in nats/token, KL in nats/token, agreement in %)."""
from __future__ import annotations

import numpy as np

FRACTIONS = (0.1, 0.2, 0.4)


def table(rows: dict[str, dict]) -> str:
  names = list(rows)
  pct = lambda v: f"{100 * v:.1f}%"
  lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
  add = lambda label, fn: lines.append(f"| {label} | " + " | ".join(fn(rows[n]) for n in names) + " |")
  add("residual branches n", lambda r: str(r["n"]))
  add("intact network", lambda r: r["intact"])
  add("chance", lambda r: r["chance"])
  add("one branch deleted (every branch; the ResNet's stage openers too): mean (worst) cost", lambda r: r["single"])
  add("the same, share of the way to chance", lambda r: f"{pct(r['single_share'][0])} ({pct(r['single_share'][1])})")
  add("first branch deleted, share of the way to chance", lambda r: pct(r["first_share"]))
  for f in FRACTIONS:
    add(f"{int(100 * f)}% of branches deleted, share", lambda r, f=f: f"{pct(r['k_share'][f][0])} (k={r['k_share'][f][1]})")
  add("layers reordered, tau >= 0.8: median share", lambda r: "n/a" if r["reorder_share"] is None
      else pct(r["reorder_share"]))
  add("effective window (share of paths)", lambda r: f"{r['window'][0]}-{r['window'][1]} of {r['n']} "
      f"({pct(r['window'][2])})")
  add("one path's gradient, factor per branch", lambda r: f"x{r['decay']:.3f}")
  return "\n".join(lines) + "\n"


def lm_tables(lm: dict) -> str:
  """The language model's own sweeps as markdown: costs in nats/token, KL in nats/token, agreement in %."""
  out = []
  if "checks" in lm:
    c = lm["checks"]
    out += ["## Checks\n", f"- loss on {c['windows']} windows of {c['window']} tokens ({c['tokens']:,} tokens): "
            f"{c['loss']:.4f} ± {c['loss_se'] or 0:.4f} nats/token; on 140 evenly spaced windows: "
            f"{c['loss_140_spaced']:.4f}; uniform guessing: {c['uniform_loss']:.3f}"
            + (f"; published (the author's own validation shard): {c['published_loss']}" if c.get("published_loss")
               else ""),
            f"- greedy sample equal to the published one token for token: {c.get('greedy_equal_to_published')}\n"]
  fmt = lambda r: f"{r['loss']:+.3f} | {r['kl']:.3f} | {100 * r['agreement']:+.1f} | {100 * r['accuracy']:+.1f}"
  if "single" in lm:
    out += [f"## Single deletions (intact: loss {lm['full']['loss']:.4f}, top-1 {100 * lm['full']['accuracy']:.2f}%)\n",
            "| deleted | loss cost | KL from intact | agreement, pts | accuracy, pts |", "|---|---:|---:|---:|---:|"]
    out += [f"| {s['name']} | {fmt(s)} |" for s in lm["single"]]
    out += [f"| layer {r['layer']} (both) | {fmt(r)} |" for r in lm["layers"]]
    out.append("")
  if "k" in lm:
    out += ["## k sublayers deleted: every subset\n", "| k | subsets | mean loss cost ± se | KL | agreement |",
            "|---:|---:|---:|---:|---:|"]
    out += [f"| {r['k']} | {r['count']} | {r['cost']:+.3f} ± {r['se']:.3f} | {r['kl']:.3f} | {100 * r['agreement']:.1f}% |"
            for r in lm["k"]]
    out += ["", "Contiguous spans of whole layers deleted (Gromov et al.):\n", "| span | loss cost | KL |", "|---|---:|---:|"]
    out += [f"| layers {r['start']}-{r['start'] + r['length'] - 1} | {r['cost']:+.3f} | {r['kl']:.3f} |"
            for r in lm["spans"]]
    out.append("")
  if "orders" in lm:
    taus = sorted({round(o["tau"], 3) for o in lm["orders"]}, reverse=True)
    out += ["## Every order of the layers\n", "| Kendall tau | orders | median loss cost | min | max |",
            "|---:|---:|---:|---:|---:|"]
    for t in taus:
      c = [o["cost"] for o in lm["orders"] if round(o["tau"], 3) == t]
      out.append(f"| {t:+.1f} | {len(c)} | {np.median(c):+.3f} | {min(c):+.3f} | {max(c):+.3f} |")
    out += ["", "Adjacent-layer swaps: " + ", ".join(f"{o['layer_order']}: {o['cost']:+.3f}" for o in lm["orders"]
                                                    if o["adjacent_swap"]), ""]
  if "painters" in lm:
    out += ["## Painters' variants (Sun et al.)\n", "| variant | layers | loss cost | KL | agreement |",
            "|---|---|---:|---:|---:|"]
    out += [f"| {r['variant']} | {r['start']}-{r['start'] + r['length'] - 1} | {r['cost']:+.3f} | {r['kl']:.3f} | "
            f"{100 * r['agreement']:.1f}% |" for r in lm["painters"]]
    out.append("")
  if "lens" in lm:
    out += ["## Logit lens\n", "| readout after | loss | KL from the output | agreement |", "|---|---:|---:|---:|"]
    out += [f"| {r['after']} | {r['loss']:.3f} | {r['kl']:.3f} | {100 * r['agreement']:.1f}% |" for r in lm["lens"]]
    out.append("")
  if "geometry" in lm:
    g = lm["geometry"]
    out += ["## Stream geometry\n", "Block influence (ShortGPT, 1 - cos of a layer's input and output): " +
            ", ".join(f"layer {i}: {b:.3f}" for i, b in enumerate(g["block_influence"])), ""]
  if "paths" in lm:
    p = lm["paths"]
    out += ["## Paths\n", f"Effective window {p['lo']}-{p['hi']} of {p['n']} ({100 * p['share']:.1f}% of paths); one "
            f"path's gradient x{p['decay']:.3f} per branch (r^2 {p['r2']:.2f}); sum of exact G_k vs the gradient: "
            f"{p['sum_error']:.1e} relative", ""]
  return "\n".join(out)
