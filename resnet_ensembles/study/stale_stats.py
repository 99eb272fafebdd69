"""How much of a deletion's damage stale BatchNorm statistics explain, in absolute errors against the deployed
network (the intact network with its stored statistics).

A recalibrated sweep and its stored twin delete the same blocks (single deletions: every block; k deletions:
the same seeded draws on the same test images), so each lesion is paired: its stored error e_s, its
recalibrated error e_r, its cost over the deployed network e_r - e_0, and the change recalibration makes,
e_r - e_s. The share of a group's stored cost that recalibration removes, (mean e_s - mean e_r) /
(mean e_s - e_0), is what the stale statistics explain. Costs taken over a *recalibrated* intact network
instead (what `bn=recalibrate_all` sweeps hold) compare two different baselines; this module never does.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from resnet_ensembles.lesion.summary import RECAL_SCOPES
from resnet_ensembles.study import verdicts as v


def _se(values) -> Optional[float]:
  values = np.asarray(values, np.float64)
  return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else None


def _key(row: dict) -> tuple:
  return (row.get("k"), tuple(np.atleast_1d(row["deleted"]).tolist()))


def paired_rows(stored: dict, recal: dict) -> list[dict]:
  """Per lesion of a sweep's network entry (stored and recalibrated): its errors, its cost over the deployed
  network and the change recalibration makes. A ValueError when the two sweeps did not delete the same blocks."""
  deployed = stored["full_error"]
  pairs = list(zip(stored["rows"], recal["rows"]))  # both sweeps draw their lesions in the same seeded order
  if len(stored["rows"]) != len(recal["rows"]) or any(_key(s) != _key(r) for s, r in pairs):
    raise ValueError("the stored and recalibrated sweeps do not delete the same blocks: they cannot be paired")
  return [{"deleted": r["deleted"], **({"k": r["k"]} if "k" in r else {}), "opener": r.get("opener", False),
           "stored_error": s["error"], "recalibrated_error": r["error"], "cost": r["error"] - deployed,
           "change": r["error"] - s["error"]} for s, r in pairs]


def group_effect(rows: list[dict], deployed: float) -> Optional[dict]:
  """A group's means (fractions of images) with standard errors over its lesions, and the share of its stored
  cost that recalibration removes (None where the stored cost is not positive)."""
  if not rows:
    return None
  stored = np.mean([r["stored_error"] for r in rows])
  recal = [r["recalibrated_error"] for r in rows]
  changes = [r["change"] for r in rows]
  stored_cost = float(stored - deployed)
  return {"count": len(rows), "stored_error": float(stored), "recalibrated_error": float(np.mean(recal)),
          "stored_cost": stored_cost, "cost": float(np.mean(recal) - deployed), "cost_se": _se(recal),
          "change": float(np.mean(changes)), "change_se": _se(changes),
          "share": None if stored_cost <= 0 else float(-np.mean(changes) / stored_cost)}


def network_effect(load, folder: str, bn: str, deletable: Optional[int] = None) -> Optional[dict]:
  """Per network: single deletions (typical blocks, stage openers) and k deletions at the paper's fractions of
  the deletable blocks, recalibrated under `bn` against stored, all against the deployed network. `load`:
  reads a sweep JSON or returns None (`series.load_json`). None where the single-deletion pair is missing."""
  single_s, single_r = (load(os.path.join(folder, f"single_{b}.json")) for b in ("stored", bn))
  if not (single_s and single_r):
    return None
  s_net, r_net = single_s["networks"][0], single_r["networks"][0]
  if r_net.get("recalibration") != RECAL_SCOPES.get(bn):  # a sweep of the other scope under this name
    raise ValueError(f"{folder}/single_{bn}.json re-estimated {r_net.get('recalibration') or 'an unrecorded scope'}"
                     f", not what bn={bn} does ({RECAL_SCOPES.get(bn)})")
  rows = paired_rows(s_net, r_net)
  deployed = s_net["full_error"]
  out = {"scope": r_net.get("recalibration") or "every statistic", "deployed": deployed,
         "intact_recalibrated": r_net["full_error"], "test_images": single_s["test_images"],
         "typical": group_effect([r for r in rows if not r["opener"]], deployed),
         "opener": group_effect([r for r in rows if r["opener"]], deployed), "rows": rows}
  multi_s, multi_r = (load(os.path.join(folder, f"multi_{b}.json")) for b in ("stored", bn))
  if multi_s and multi_r:
    ms, mr = multi_s["networks"][0], multi_r["networks"][0]
    k_rows = paired_rows(ms, mr)
    ks = v.k_at_fractions(deletable or s_net["num_blocks"] - len(s_net["stage_openers"]),
                          sorted({int(r["k"]) for r in k_rows}))
    out["k_deployed"] = ms["full_error"]
    out["k"] = {str(f): None if k is None else {"k": k, **group_effect([r for r in k_rows if r["k"] == k],
                                                                         ms["full_error"])}
                for f, k in ks.items()}
    out["k_rows"] = k_rows
  return out


def folders_summary(load, folders: dict[str, str], bn: str) -> dict:
  """{"networks": {label: {bn: {"n", "stale"}}}} for any folders that hold a stored sweep and its twin under
  `bn` (the shape `series_table.stale_table` draws); a folder without the single-deletion pair is "not yet
  swept"."""
  nets = {}
  for label, folder in folders.items():
    e = network_effect(load, folder, bn)
    single = load(os.path.join(folder, "single_stored.json"))
    nets[label] = {bn: {"n": single["networks"][0]["num_blocks"] if single else None, "stale": e}}
  return {"networks": nets}


def parse_folders(values: list[str]) -> dict[str, str]:
  """label=folder pairs (a command line's), in order; a ValueError names the first that is malformed or not a
  folder."""
  out = {}
  for value in values:
    label, sep, folder = value.partition("=")
    if not sep or not label or not folder:
      raise ValueError(f"--sweep takes label=folder, got {value!r}")
    if not os.path.isdir(folder):
      raise ValueError(f"--sweep {label}: {folder} is not a folder")
    out[label] = folder
  return out
