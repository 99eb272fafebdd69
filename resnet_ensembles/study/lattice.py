"""The lesion lattice study of one network: its lattice (or sampled Shapley values), the cheap scores, and
what relates them; JSON first (`<out_dir>/<name>.json`), tables and figures from it (`lattice_tables`).

A network of up to 12 chosen branches gets its complete lattice (`lesion.lattice`): exact Shapley values and
interactions in loss and in error, the additive shares, single-deletion costs and pruning curves. A larger
one gets permutation-sampled Shapley values with standard errors and single-deletion costs from the input.
Every network goes through the models interface only, so any `ResidualStack` is one config line. A language
model comes with a `lesion.tasks.TokenTask` instead of an image split: its lattice is scored by that task (loss
in nats/token) and its "error" is the disagreement with the intact model, 1 - top-1 agreement.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional

import numpy as np
from absl import logging

from resnet_ensembles.lesion import lattice, progress, scores, shapley
from resnet_ensembles.store import checkpoints
from resnet_ensembles.utils.provenance import git_commit

METRICS = ("loss", "error")


def _lattice_part(lat: dict, score_table: dict, span: np.ndarray, positions: list, seed: int) -> dict:
  k = len(positions)
  full = 2 ** k - 1
  out = {"lattice": {"loss": lat["loss"].tolist(), "error": lat["error"].tolist(), "levels": lat["levels"],
                     "batch_size": lat["batch_size"]}}
  for metric in METRICS:
    table = np.asarray(lat[metric])
    v = shapley.worth(table)
    exact = shapley.exact_shapley(v)
    # the estimator's check against the exact values: 200 permutations on the lattice's own table
    lookup = lambda m: v[(np.asarray(m, np.int64) << np.arange(k)).sum(1)]
    mean, se = shapley.sampled_shapley(lookup, k, 200, seed)
    out[metric] = {"full": float(table[full]), "none_kept": float(table[0]), "shapley": exact.tolist(),
                   "interactions": shapley.interactions(v).tolist(), "additivity": shapley.additivity(v),
                   "walsh_shares": shapley.walsh_shares(v).tolist(),
                   "single_cost": [float(table[full & ~(1 << j)] - table[full]) for j in range(k)],
                   "sampled_check": {"permutations": 200, "mean": mean.tolist(), "se": se.tolist(),
                                     "max_abs_z": float(np.max(np.abs(mean - exact) / np.maximum(se, 1e-12)))}}
  loss = np.asarray(lat["loss"])
  oracle, oracle_sets = shapley.oracle_curve(loss)
  greedy, greedy_order = shapley.greedy_curve(loss)
  curves = {"oracle": oracle.tolist(), "greedy": greedy.tolist(),
            "shapley": shapley.ranked_curve(loss, shapley.least_important_first(out["loss"]["shapley"])).tolist()}
  for name, s in score_table.items():
    curves[name] = shapley.ranked_curve(loss, shapley.least_important_first(s)).tolist()
  spans = []
  for d in range(k + 1):
    run = [j for j in range(k - d + 1) if positions[j + d - 1] - positions[j] == d - 1] if d else []
    dist = np.full((k + 1, k + 1), np.nan)
    for j in run:
      dist[j, d] = span[positions[j], d]
    chosen = shapley.contiguous_span_order(dist, k, d)
    m = full if chosen is None else full & ~sum(1 << j for j in chosen)
    spans.append(float(loss[m]) if chosen is not None else None)
  curves["angular_span"] = spans
  out["pruning"] = {"curves": curves, "oracle_sets": oracle_sets, "greedy_order": greedy_order}
  return out


def _sampled_part(model, variables, split, num_permutations: int, seed: int, batch_size: int) -> dict:
  n = model.layout.num_blocks
  stack = np.concatenate([np.ones((1, n)), np.zeros((1, n)), 1.0 - np.eye(n)]).astype(np.float32)
  base = lattice.mask_values(model, variables, split, stack, batch_size=batch_size)
  cache: dict = {}

  def worth_of(metric):
    def value(masks):  # the permutations' coalitions, evaluated from the input once for both metrics
      if not cache:
        cache.update(lattice.mask_values(model, variables, split, masks, batch_size=batch_size))
      return base[metric][1] - cache[metric]
    return value

  out = {}
  for metric in METRICS:
    mean, se = shapley.sampled_shapley(worth_of(metric), n, num_permutations, seed)  # same seed: same coalitions
    out[metric] = {"full": float(base[metric][0]), "none_kept": float(base[metric][1]), "shapley": mean.tolist(),
                   "shapley_se": se.tolist(), "permutations": num_permutations,
                   "single_cost": (base[metric][2:] - base[metric][0]).tolist()}
  return out


def add_correlations(result: dict, seed: int = 0) -> dict:
  """Spearman rho (bootstrap 95% CI) of each score with the single-deletion cost and the Shapley value, in loss
  ("correlations") and in error ("correlations_error"), over the study's branches; fills what is missing."""
  for field, metric in (("correlations", "loss"), ("correlations_error", "error")):
    if field not in result:
      result[field] = {target: {s: scores.spearman_ci(result["scores"][s], result[metric][target], seed=seed)
                                for s in scores.SCORES} for target in ("single_cost", "shapley")}
  return result


def _token_lattice(model, variables, task, positions, memory_budget: int, resume_dir: str) -> dict:
  """The token task's lattice in the study's two metrics: loss (nats/token) and "error" = 1 - agreement."""
  lat = lattice.task_lattice_sweep(model, variables, task, positions, memory_budget=memory_budget,
                                   resume_dir=resume_dir)
  return dict(lat, error=1.0 - np.asarray(lat["agreement"]))


def study_network(name: str, path: str, split, out_dir: str, *, mode: str = "lattice",
                  positions: Optional[list] = None, num_permutations: int = 20, seed: int = 0,
                  batch_size: int = 16, memory_budget_mb: int = 512, loaded: Optional[tuple] = None,
                  task=None) -> dict:
  """The study of the trained network at `path` on `split` (or, for a language model, on the token `task`;
  `split` then unused), written to `<out_dir>/<name>.json` (a finished JSON is read back, not redone; an
  interrupted lattice continues from its finished sub-tries)."""
  if mode not in ("lattice", "sampled") or (task is not None and mode != "lattice"):
    raise ValueError(f"mode must be 'lattice' or 'sampled' ('lattice' with a token task), got {mode!r}")
  out_json = os.path.join(out_dir, f"{name}.json")
  if os.path.exists(out_json):
    with open(out_json) as f:
      return json.load(f)
  model, variables, _ = loaded or checkpoints.load_trained(path)
  layout = model.layout
  if mode == "lattice":
    positions = list(lattice.lattice_positions(layout, positions))
  else:
    positions = list(range(layout.num_blocks))
  if task is not None:
    split = (np.asarray(task.tokens), np.asarray(task.targets))
  t0 = time.time()
  sc = scores.branch_scores(model, variables, split, batch_size=100 if task is None else task.batch_size)
  t_scores = time.time() - t0
  score_table = {k: np.asarray(v)[positions] for k, v in sc["scores"].items()}
  result = {"name": name, "path": path, "model": type(model).__name__, "num_blocks": layout.num_blocks,
            "residual": bool(model.residual), "stage_openers": list(layout.stage_openers), "positions": positions,
            "mode": mode, "test_images": None if task is not None else int(len(split[1])), "commit": git_commit(),
            "error_metric": "error" if task is None else "disagreement",
            "variables_sha256": checkpoints.fingerprint(variables),
            "scores": {k: v.tolist() for k, v in score_table.items()},
            "scores_all_blocks": {k: np.asarray(v).tolist() for k, v in sc["scores"].items()},
            "lens_loss": np.asarray(sc["lens_loss"]).tolist(), "span_angular": np.where(
                np.isnan(sc["span_angular"]), None, sc["span_angular"]).tolist(), "seconds": {"scores": t_scores}}
  t0 = time.time()
  if task is not None:
    result.update(windows=int(split[1].shape[0]), window=int(split[1].shape[1]), tokens=int(split[1].size))
    lat = _token_lattice(model, variables, task, positions, memory_budget_mb << 20,
                         progress.partial_dir(out_json, name))
    result.update(_lattice_part(lat, score_table, np.asarray(sc["span_angular"]), positions, seed))
    result["lattice"].update({m: np.asarray(lat[m]).tolist() for m in ("agreement", "kl", "accuracy")})
  elif mode == "lattice":
    lat = lattice.lattice_sweep(model, variables, split, positions, batch_size=batch_size,
                                memory_budget=memory_budget_mb << 20,
                                resume_dir=progress.partial_dir(out_json, name))
    result.update(_lattice_part(lat, score_table, np.asarray(sc["span_angular"]), positions, seed))
  else:
    result.update(_sampled_part(model, variables, split, num_permutations, seed, batch_size=100))
  result["seconds"]["lesions"] = time.time() - t0
  add_correlations(result, seed)
  os.makedirs(out_dir, exist_ok=True)
  tmp = out_json + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, out_json)
  progress.discard(out_json)
  logging.info("lattice study of %s: %s (%.0f s of lesions)", name, out_json, result["seconds"]["lesions"])
  return result
