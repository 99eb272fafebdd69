"""The per-example study's report: everything experiments/path_usage.py writes, from per-image profiles.

`analyze` joins the per-image path profiles (`per_example.profile_dataset`), the single-deletion predictions
and the images into one JSON-ready dict (the figure draws from it alone, images included as base64);
`headline` turns it into the few lines the main prints. The statistics are in `per_example_stats`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import stats

from resnet_ensembles.paths.per_example import WHERE, Array, summarize
from resnet_ensembles.paths.per_example_stats import (deciles, describe, flip_counts, group_quantiles, histogram,
                                                      rank_correlation)

def _pixels(img: np.ndarray) -> dict:
  """A uint8 image as JSON: shape and base64 of its bytes (the figure draws it from the JSON alone)."""
  import base64
  img = np.ascontiguousarray(img, np.uint8)
  return dict(shape=list(img.shape), base64=base64.b64encode(img.tobytes()).decode())


def image_from_json(d: dict) -> np.ndarray:
  import base64
  return np.frombuffer(base64.b64decode(d["base64"]), np.uint8).reshape(d["shape"])


def _round(a, digits: int = 5) -> list:
  return [float(f"{x:.{digits}g}") for x in np.asarray(a, np.float64)]


def analyze(prof: dict, preds: Array, labels: Array, images: np.ndarray, *, share: float = 0.9, grid: int = 16,
            n_resamples: int = 2000, seed: int = 0, sweep: Optional[dict] = None,
            variables_sha256: str = "", class_names: Optional[list] = None,
            test_index: Optional[Array] = None) -> dict:
  """Everything the per-example study reports, from per-image profiles `prof` (`profile_dataset`), the
  single-deletion predictions `preds` [n+1, N] (row 0: full network, row 1+i: block i deleted), labels and
  the images (for the grid). `sweep`: a committed single-deletion sweep JSON to check the per-lesion
  errors against (when it studied the same network). `test_index`: each image's index in the test split
  (default 0..N-1). Bootstrap intervals for the headline gradient ("image"); Fisher z for "block0"."""
  labels, preds = np.asarray(labels), np.asarray(preds)
  test_index = np.arange(len(labels)) if test_index is None else np.asarray(test_index)
  n = prof["image"].shape[1] - 1
  num = len(labels)
  if preds.shape != (n + 1, num):
    raise ValueError(f"deletion predictions must be [{n + 1}, {num}], got {preds.shape}")
  tape_pred = np.argmax(prof["logits"], -1)
  full_pred = preds[0]
  correct = full_pred == labels
  flips = flip_counts(full_pred, preds[1:], labels)
  loss = np.asarray(prof["loss"], np.float64)
  loss_decile = deciles(loss)
  per = {w: summarize(prof[w], share) for w in WHERE}
  out = dict(num_images=num, share=share, which_headline="image", full_error=float(1 - correct.mean()),
             tape_vs_wavefront_prediction_agreement=float((tape_pred == full_pred).mean()),
             max_per_image_sum_error=float(np.max(prof["sum_error"])) if "sum_error" in prof else None,
             distribution={}, groups={}, lesion_link={}, loss_link={}, correct_vs_wrong={})
  out["mean_profile"] = {w: _round(prof[w].mean(0)) for w in WHERE}
  normed = {w: prof[w] / np.maximum(prof[w].sum(1, keepdims=True), 1e-30) for w in WHERE}
  out["mean_normalized_profile"] = {w: {"all": _round(normed[w].mean(0)), "correct": _round(normed[w][correct].mean(0)),
                                        "wrong": _round(normed[w][~correct].mean(0))} for w in WHERE}
  windows_ = {}
  for w in WHERE:
    s = per[w]
    pairs, counts = np.unique(np.stack([s["lo"], s["hi"]], 1), axis=0, return_counts=True)
    order = np.argsort(-counts)
    windows_[w] = [dict(lo=int(pairs[i, 0]), hi=int(pairs[i, 1]), images=int(counts[i])) for i in order]
    out["distribution"][w] = dict(
        lo=histogram(s["lo"], n), hi=histogram(s["hi"], n), width=histogram(s["width"], n + 1)[1:],
        peak=histogram(s["peak"], n), mean_length=describe(s["mean_length"]), carried=describe(s["carried"]),
        path_fraction=describe(s["path_fraction"]), windows=windows_[w],
        quantiles={k: describe(s[k]) for k in ("lo", "hi", "width", "peak", "mean_length")})
    keys = ("peak", "mean_length", "lo", "hi", "width")
    out["groups"][w] = dict(
        correct=group_quantiles(s, np.where(correct, 0, 1), ["correct", "wrong"], keys),
        by_class=group_quantiles(s, labels, class_names, keys),
        by_loss_decile=group_quantiles(s, loss_decile, [f"d{i + 1}" for i in range(10)], keys),
        by_flips=group_quantiles(s, flips["flips"], None, keys))
    mw = stats.mannwhitneyu(s["mean_length"][~correct], s["mean_length"][correct]) if 0 < correct.sum() < num else None
    out["correct_vs_wrong"][w] = dict(
        mean_length_mannwhitney_p=float(mw.pvalue) if mw else None,
        mean_length_auc_wrong_gt_correct=float(mw.statistic / (correct.sum() * (~correct).sum())) if mw else None)
    boot = n_resamples if w == "image" else 0
    out["loss_link"][w] = {k: rank_correlation(s[k], loss, n_resamples=boot, seed=seed) for k in ("mean_length", "peak")}
  out["loss_deciles"] = dict(upper_edges=_round(np.quantile(loss, np.arange(1, 11) / 10)),
                             error=[float(1 - correct[loss_decile == d].mean()) for d in range(10)],
                             mean_flips=[float(flips["flips"][loss_decile == d].mean()) for d in range(10)])
  # the lesion link: does a profile leaning on long paths go with more flipping deletions?
  ok = correct
  for w in WHERE:
    s, boot = per[w], (n_resamples if w == "image" else 0)
    link = {}
    for k in ("peak", "mean_length"):
      link[f"{k}_vs_flips"] = rank_correlation(s[k], flips["flips"], control=loss, n_resamples=boot, seed=seed)
      link[f"{k}_vs_breaks_correct_images"] = (rank_correlation(s[k][ok], flips["breaks"][ok], control=loss[ok],
                                                                n_resamples=boot, seed=seed) if ok.sum() >= 4 else None)
      vals = np.unique(s[k]) if k == "peak" else None
      if k == "peak":
        link["mean_flips_by_peak"] = {str(int(v)): dict(images=int((s[k] == v).sum()),
                                                        mean_flips=float(flips["flips"][s[k] == v].mean()))
                                      for v in vals}
    q = deciles(s["mean_length"])
    link["mean_flips_by_mean_length_decile"] = dict(
        mean_length_median=[float(np.median(s["mean_length"][q == d])) for d in range(10)],
        mean_flips=[float(flips["flips"][q == d].mean()) for d in range(10)],
        mean_breaks_correct=[float(flips["breaks"][(q == d) & ok].mean()) for d in range(10)])
    out["lesion_link"][w] = link
  out["flips"] = dict(histogram=histogram(flips["flips"], n), describe=describe(flips["flips"]),
                      breaks_histogram_correct=histogram(flips["breaks"][ok], n),
                      per_deletion_error=_round(flips["per_deletion_error"]),
                      per_deletion_flip_rate=_round(flips["per_deletion_flip_rate"]))
  if sweep is not None:
    net = next((x for x in sweep.get("networks", []) if x.get("variables_sha256") == variables_sha256), None)
    if net is None:
      out["sweep_check"] = dict(matched=False, note="the sweep JSON studied another network (fingerprint)")
    else:
      errs = {int(r["deleted"]): r["error"] for r in net["rows"]}
      ours = flips["per_deletion_error"]
      out["sweep_check"] = dict(matched=True, full_error_sweep=net["full_error"],
                                max_abs_error_difference=float(max(abs(ours[i] - errs[i]) for i in errs)),
                                full_error_difference=float(abs(out["full_error"] - net["full_error"])))
  s = per["image"]
  order = np.argsort(-s["mean_length"], kind="stable")
  pick = lambda idx: [dict(index=int(test_index[i]), label=int(labels[i]), pred=int(full_pred[i]), loss=float(loss[i]),
                           mean_length=float(s["mean_length"][i]), peak=int(s["peak"][i]), lo=int(s["lo"][i]),
                           hi=int(s["hi"][i]), flips=int(flips["flips"][i]), pixels=_pixels(images[i])) for i in idx]
  out["grid"] = dict(longest=pick(order[:grid]), shortest=pick(order[::-1][:grid]), order_by="mean_length (image)")
  out["class_names"] = class_names
  out["per_image"] = dict(
      test_index=test_index.tolist(), label=labels.tolist(), pred=full_pred.tolist(), loss=_round(loss, 4), flips=flips["flips"].tolist(),
      breaks=flips["breaks"].tolist(),
      **{f"{w}_{k}": (per[w][k].tolist() if k in ("lo", "hi", "peak") else _round(per[w][k], 4))
         for w in WHERE for k in ("lo", "hi", "peak", "mean_length")})
  return out


def headline(result: dict) -> list[str]:
  """The key numbers as lines of text."""
  w = result["which_headline"]
  d, g, link = result["distribution"][w], result["groups"][w]["correct"], result["lesion_link"][w]
  top = d["windows"][0]
  fmt = lambda c: (f"rho {c['spearman']:+.3f} (bootstrap {100 * c['confidence']:.0f}% CI "
                   f"[{c['bootstrap_ci'][0]:+.3f}, {c['bootstrap_ci'][1]:+.3f}], Fisher z "
                   f"[{c['fisher_z_ci'][0]:+.3f}, {c['fisher_z_ci'][1]:+.3f}])")
  q = lambda x: f"median {x['q50']:.3g} (IQR {x['q25']:.3g}-{x['q75']:.3g})"
  lines = [f"{result['num_images']} images, {result['method']} ||G_k|| at the {w}: most common window "
           f"{top['lo']}-{top['hi']} ({top['images']} images); peak {q(d['quantiles']['peak'])}; mean length {q(d['mean_length'])}",
           f"correct: peak {q(g['correct']['peak'])}, mean length {q(g['correct']['mean_length'])}; wrong: peak "
           f"{q(g['wrong']['peak'])}, mean length {q(g['wrong']['mean_length'])}",
           f"peak length vs single-deletion flips: {fmt(link['peak_vs_flips'])}",
           f"mean length vs flips: {fmt(link['mean_length_vs_flips'])}; given the loss: partial rho "
           f"{link['mean_length_vs_flips']['partial_given_control']['rho']:+.3f}"]
  return lines
