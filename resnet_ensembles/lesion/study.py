"""One lesion sweep of one trained network, as a row list in the JSON schema every figure reads.

Shared by `experiments/lesion.py` (flags) and `experiments/reproduce.py` (config): builds the mask/order
stack for a sweep, runs the prefix-shared wavefront (single deletions, stored BN) or the vmapped
`lesion.evaluate`, and returns {"label", "workdir", "variables_sha256", "model", "num_blocks", "branch_scale",
"train_mask", "stage_openers", "full_error", "rows"}; every row carries its lesion (deleted block(s) or order) and its
error and per-class accuracy. A network trained with stochastic depth is lesioned as it is tested: kept
branches scaled by p_l. `test_time_treatments` compares the two test-time readings of forward short paths.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from absl import logging

from resnet_ensembles import models
from resnet_ensembles.store import checkpoints
from resnet_ensembles.lesion import sweep as lesion
from resnet_ensembles.lesion import masks, painters
from resnet_ensembles.lesion.summary import RECAL_SCOPES
from resnet_ensembles.models import samplers
from resnet_ensembles.models.layout import Layout

SWEEPS = ("single", "multi", "reorder")        # Veit et al. Figs. 3-5, every ResidualStack
UNIT_SWEEPS = ("layers", "painters")           # whole order units deleted; Sun et al.'s layer lesions (ViT)
ALL_SWEEPS = SWEEPS + UNIT_SWEEPS


def check_sweep_args(sweep: str, *, num_samples: int = 10, max_k: int = masks.PAPER_MAX_K, batch_size: int = 500,
                     memory_budget_mb: int = 512, recal_batches: int = 4, recal_batch_size: int = 128) -> None:
  """One-line errors for a sweep's settings, before any data is read or anything compiles."""
  if sweep not in ALL_SWEEPS:
    raise ValueError(f"sweep must be one of {ALL_SWEEPS}, got {sweep!r}")
  for name, value in (("num_samples", num_samples), ("max_k", max_k), ("batch_size", batch_size),
                      ("memory_budget_mb", memory_budget_mb), ("recal_batches", recal_batches),
                      ("recal_batch_size", recal_batch_size)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")


def lesion_stack(layout: Layout, sweep: str, *, num_samples: int = 10, max_k: int = masks.PAPER_MAX_K,
                 seed: int = 0, include_openers: bool = False, ks: Optional[Sequence[int]] = None
                 ) -> tuple[np.ndarray, Optional[np.ndarray], list[dict]]:
  """(masks, orders or None, row descriptions); the last row is always the full network. `ks` (multi): the
  numbers of deleted blocks to draw, instead of every k up to `max_k` (a deep network's curve at fewer points)."""
  check_sweep_args(sweep, num_samples=num_samples, max_k=max_k)
  n = layout.num_blocks
  full = np.ones((1, n), np.float32)
  if sweep == "single":
    m, deleted = masks.single_deletions(layout)
    rows = [{"deleted": int(i), "stage": layout.stage_of_block[i], "opener": int(i) in layout.stage_openers}
            for i in deleted]
    return np.concatenate([m, full]), None, rows + [{"full": True}]
  if sweep == "layers":
    m, units = masks.unit_deletions(layout)
    rows = [{"deleted_unit": blocks[0] // layout.order_unit, "deleted": blocks} for blocks in units]
    return np.concatenate([m, full]), None, rows + [{"full": True}]
  if sweep == "painters":
    raise ValueError("the painters sweep is not a mask/order stack: see lesion.painters.configurations")
  if sweep == "multi":
    ks = masks.default_ks(layout, include_openers)[:max_k] if ks is None else list(ks)
    m, k = masks.random_deletions(layout, num_samples, seed, ks, include_openers)
    rows = [{"k": int(kk), "deleted": np.flatnonzero(mm == 0).tolist()} for mm, kk in zip(m, k)]
    return np.concatenate([m, full]), None, rows + [{"k": 0, "full": True}]
  o, swaps, taus = masks.random_reorderings(layout, num_samples, seed, range(1, max_k + 1))
  rows = [{"swaps": int(k), "kendall_tau": float(t), "order": oo.tolist()} for oo, k, t in zip(o, swaps, taus)]
  o = np.concatenate([o, np.arange(n)[None]])
  return np.ones(o.shape, np.float32), o, rows + [{"swaps": 0, "kendall_tau": 1.0, "full": True}]


def sweep_network(path: str, label: str, data: dict, sweep: str, *, bn: str = "stored", num_samples: int = 10,
                  max_k: int = masks.PAPER_MAX_K, seed: int = 0, include_openers: bool = False,
                  batch_size: int = 500, memory_budget_mb: int = 512, recal_batches: int = 4,
                  recal_batch_size: int = 128, resume_dir: Optional[str] = None,
                  loaded: Optional[tuple] = None, ks: Optional[Sequence[int]] = None) -> dict:
  """Loads the trained network at `path` (or takes `loaded`, what `checkpoints.load_trained(path)` returned)
  and sweeps it on data["test"] (recalibrating on data["train"]).
  `resume_dir` (e.g. `progress.partial_dir(out_json, label)`): finished chunks of the vmapped sweep are kept
  there as they finish, so a rerun after a kill continues where it stopped (`lesion.evaluate`; the single
  deletions' prefix-shared wavefront keeps chunks of test images)."""
  check_sweep_args(sweep, num_samples=num_samples, max_k=max_k, batch_size=batch_size,
                   memory_budget_mb=memory_budget_mb, recal_batches=recal_batches, recal_batch_size=recal_batch_size)
  model, variables, config = loaded or checkpoints.load_trained(path)
  if sweep == "painters":
    return _painters_sweep(model, variables, config, path, label, data, batch_size, bn, seed)
  scale = samplers.test_time_mask(config.train_mask, model.layout) if "train_mask" in config else None
  m, o, rows = lesion_stack(model.layout, sweep, num_samples=num_samples, max_k=max_k, seed=seed,
                            include_openers=include_openers, ks=ks)
  budget = memory_budget_mb << 20
  logging.info("%s: %s sweep of %d lesions (%s BN) on %d test images", label, sweep, len(rows) - 1, bn,
               len(data["test"][1]))
  key = dict(label=label, sweep=sweep, num_samples=num_samples, max_k=max_k, seed=seed,
             include_openers=include_openers,
             model_config=models.network_fields(config.model.to_dict()),
             **({} if ks is None else {"ks": [int(k) for k in ks]}))
  if sweep == "single":  # prefix-shared wavefront: every deletion shares the intact network's prefix
    stats = None
    if bn in lesion.RECAL_MODES:  # each deletion's statistics (and the intact network's) as `evaluate`'s
      stats = lesion.recalibrated_stack(model, variables, m, data["train"], bn=bn, recal_batches=recal_batches,
                                        recal_batch_size=recal_batch_size, seed=seed, branch_scale=scale,
                                        memory_budget=budget)
      stats = jax.tree.map(lambda a: np.concatenate([a[-1:], a[:-1]]), stats)  # the full network's row first
    out = lesion.single_deletion_sweep(model, variables, data["test"], batch_size=batch_size,
                                       memory_budget=budget, branch_scale=scale, stream_stats=stats,
                                       resume_dir=resume_dir, resume_key=dict(key, bn=bn))
    out = {k: np.concatenate([out[k], [out[f"full_{k}"]]]) for k in out if not k.startswith("full_")}
  else:  # random lesions repeat (e.g. every k = n-deletion is the same): evaluate each distinct one once
    stack = m if o is None else np.concatenate([m, o.astype(np.float32)], axis=1)
    _, first, inverse = np.unique(stack, axis=0, return_index=True, return_inverse=True)
    logging.info("%s: %d distinct of %d lesions", label, len(first), len(stack))
    out = lesion.evaluate(model, variables, data["test"], m[first], None if o is None else o[first], bn=bn,
                          batch_size=batch_size, memory_budget=budget, recal_split=data["train"],
                          recal_batches=recal_batches, recal_batch_size=recal_batch_size, seed=seed,
                          branch_scale=scale, resume_dir=resume_dir,
                          resume_key=key)
    out = {k: np.asarray(v)[inverse.reshape(-1)] for k, v in out.items()}
  for i, row in enumerate(rows):
    row.update({k: (v[i].tolist() if np.ndim(v[i]) else float(v[i])) for k, v in out.items()})
  return {"label": label, "workdir": path, "variables_sha256": checkpoints.fingerprint(variables),
          "model": config.model.to_dict(), "num_blocks": model.layout.num_blocks,
          "branch_scale": None if scale is None else scale.tolist(),
          "train_mask": config.train_mask.to_dict() if "train_mask" in config else None,
          "stage_openers": list(model.layout.stage_openers), "recalibration": recalibration(bn),
          "full_error": rows[-1]["error"], "rows": rows[:-1]}


def recalibration(bn: str) -> Optional[str]:
  """What a sweep under `bn` re-estimated, recorded in its JSON so that sweeps of the two scopes never mix."""
  return RECAL_SCOPES.get(bn)


def _painters_sweep(model, variables, config, path, label, data, batch_size, bn, seed) -> dict:
  """Layers in parallel, skipped, reversed, shuffled (`lesion.painters`), in the schema of the other sweeps."""
  if bn != "stored":
    raise ValueError("the painters sweep runs with the network as trained (bn='stored')")
  painters.check_painters_model(model)
  m, o, reads, rows = painters.configurations(model.depth, model.layout.order_unit, seed=seed)
  logging.info("%s: %d layer lesions on %d test images", label, len(rows) - 1, len(data["test"][1]))
  out = painters.evaluate(model, variables, data["test"], m, o, reads, batch_size=batch_size)
  for i, row in enumerate(rows):
    row.update(layer_order=(o[i][::model.layout.order_unit] // model.layout.order_unit).tolist(),
               parallel_from=reads[i].tolist(), deleted=np.flatnonzero(m[i] == 0).tolist(),
               **{k: (v[i].tolist() if np.ndim(v[i]) else float(v[i])) for k, v in out.items()})
  return {"label": label, "workdir": path, "variables_sha256": checkpoints.fingerprint(variables),
          "model": config.model.to_dict(), "num_blocks": model.layout.num_blocks, "num_layers": model.depth,
          "branch_scale": None, "train_mask": None, "stage_openers": list(model.layout.stage_openers),
          "full_error": rows[-1]["error"], "rows": rows[:-1]}


def test_time_treatments(path: str, split, *, batch_size: int = 500) -> dict:
  """Full-network test error of a trained network under both test-time treatments of forward short-path
  training (Veit et al. Sec. 5.3 leave it open): every branch at full strength, or scaled by K/n."""
  model, variables, config = checkpoints.load_trained(path)
  n = model.layout.num_blocks
  k = config.train_mask.get("num_active", 0) or samplers.default_num_active(n)
  full = np.ones((1, n), np.float32)
  err = lambda scale: float(lesion.evaluate(model, variables, split, full, batch_size=batch_size,
                                            branch_scale=scale)["error"][0])
  return {"num_active": int(k), "num_blocks": n, "unscaled_error": err(None),
          "scaled_error": err(np.full(n, k / n, np.float32)), "trained_with": config.train_mask.to_dict()}
