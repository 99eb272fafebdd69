"""The whole Veit et al. study as resumable stages: train -> lesion sweeps -> paths -> figures -> report.

Each stage writes its outputs and `<workdir>/<stage>.done.json` (a hash of its config section). A stage is
skipped when its outputs and done-file exist and the hash matches; once a stage reruns, every later stage
reruns too. Training resumes from its own checkpoints, so a rerun after a kill continues where it stopped.
Layout: train/{resnet,plain,sd,short,short_fwd}/, lesion/<run>/{single,multi,reorder}_<bn>.json (+ .csv, .png),
paths/paths.json (+ .png), variants/variants.{json,png}, report.md. The stages themselves live in
`stages`; the command is experiments/reproduce.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Optional

import jax
from absl import logging

from resnet_ensembles.data import for_run as data_for_run
from resnet_ensembles.parallel import distributed
from resnet_ensembles.store import lock
from resnet_ensembles.utils.provenance import git_commit
from resnet_ensembles.study import stages
from resnet_ensembles.study.lesion_stage import lesion_run, stage_lesion
from resnet_ensembles.study.stages import (RUNS, SWEEP_RUNS, TREATMENTS, DataCache, Preempted, apply_precision,
                                           is_forward_short_path, train_config, train_run, write_json)

__all__ = ["RUNS", "STAGES", "TREATMENTS", "Preempted", "config_hash", "is_done", "run", "run_part", "seed_workdir",
           "stage_outputs", "train_config"]

HOST_STAGES = ("figures", "report")  # no devices involved: process 0 alone
STAGE_FNS = {"train": stages.stage_train, "lesion_single": stage_lesion("single"), "lesion_multi": stage_lesion("multi"),
             "lesion_reorder": stage_lesion("reorder"), "paths": stages.stage_paths, "figures": stages.stage_figures,
             "report": stages.stage_report}

STAGES = ("train", "lesion_single", "lesion_multi", "lesion_reorder", "paths", "figures", "report")
TITLES = {"train": "train", "lesion_single": "lesion single", "lesion_multi": "lesion multi",
          "lesion_reorder": "lesion reorder", "paths": "paths", "figures": "figures", "report": "report"}


def section(config, stage: str) -> dict:
  """The part of `config` a stage's outputs depend on (its done-file records a hash of it). For the train stage:
  each run's training config with data.folder replaced by what the folder holds (`for_run.identity`), so the
  same copy at another path (a fresh clone, another machine, a symlink) keeps the train stage and every stage
  after it, while other images (a file added, removed or resized) redo it."""
  if stage == "train":
    configs, identities = {run: train_config(config, run).to_dict() for run in RUNS}, {}
    for c in configs.values():
      key = (c["data"]["source"], c["data"]["folder"])
      if key not in identities:  # one listing of the folder for all runs
        identities[key] = data_for_run.identity(*key)
      c["data"]["folder"] = identities[key]
    return configs
  if stage.startswith("lesion_"):
    return {"sweep": stage[len("lesion_"):], **config.lesion.to_dict()}
  return getattr(config, stage).to_dict()


def config_hash(config, stage: str) -> str:
  blob = json.dumps(section(config, stage), sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_outputs(config, workdir: str, stage: str) -> list[str]:
  bn = config.lesion.bn
  if stage == "train":
    return [os.path.join(workdir, "train", run, "metrics.jsonl") for run in RUNS] + [
        os.path.join(workdir, "train", run, TREATMENTS) for run in RUNS if is_forward_short_path(config, run)]
  if stage.startswith("lesion_"):
    sweep = stage[len("lesion_"):]
    return [os.path.join(workdir, "lesion", run, f"{sweep}_{bn}.json") for run in SWEEP_RUNS[sweep]]
  if stage == "paths":
    return [os.path.join(workdir, "paths", "paths.json")]
  if stage == "figures":
    figs = [os.path.join(workdir, "lesion", run, f"{sweep}_{bn}.png")
            for sweep, runs in SWEEP_RUNS.items() for run in runs]
    return figs + [os.path.join(workdir, "paths", "paths.png"), os.path.join(workdir, "variants", "variants.png"),
                   os.path.join(workdir, "variants", "variants.json")]
  return [os.path.join(workdir, "report.md")]


def _done_path(workdir: str, stage: str) -> str:
  return os.path.join(workdir, f"{stage}.done.json")


def is_done(config, workdir: str, stage: str) -> bool:
  path = _done_path(workdir, stage)
  if not os.path.exists(path) or not all(os.path.exists(p) for p in stage_outputs(config, workdir, stage)):
    return False
  with open(path) as f:
    return json.load(f).get("hash") == config_hash(config, stage)


def seed_workdir(source: str, workdir: str) -> bool:
  """Copies a study folder (e.g. the committed results/repro) into a workdir that does not exist yet, so a
  first run redoes only what differs here. Returns whether it copied; an existing workdir is left alone (one
  holding only the lock file of the main that called this is still empty)."""
  # Process 0's view for all (the lock file is process 0's: another process may see it or not).
  if distributed.agree(os.path.exists(workdir) and bool(set(os.listdir(workdir)) - {lock.LOCK_FILE})):
    logging.info("%s exists: continuing it (--start_from %s ignored)", workdir, source)
    return False
  if not os.path.isfile(os.path.join(source, "train.done.json")):
    raise FileNotFoundError(f"--start_from {source} is not a study folder (no train.done.json)")
  if jax.process_index() == 0:
    shutil.copytree(source, workdir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(lock.LOCK_FILE))
  distributed.barrier("seed_workdir")
  logging.info("started %s from the finished study in %s: the stages keep every network and sweep that is "
               "still valid and redo what this machine's data or code changes (./run.sh scratch trains anew)",
               workdir, source)
  return True


def run(config, workdir: str, data: Optional[dict] = None) -> list[str]:
  """Runs every stage not already done for this config; returns the stages that ran.

  `data`: optionally the full CIFAR-10 dataset ({"train", "test"} splits), so nothing is decoded again.
  On several processes (a shared workdir) every process runs the device stages, process 0 alone writes,
  and all of them meet at a barrier before and after each stage, so they take the same decisions. Holds
  `workdir`'s lock (`store.lock`): a second study there fails at once; each training holds its own folder."""
  with lock.hold(workdir):
    return _run(config, workdir, data)


def _run(config, workdir: str, data: Optional[dict]) -> list[str]:
  main = distributed.is_main_process()
  os.makedirs(workdir, exist_ok=True)
  apply_precision(config)
  loader, ran, rerun = DataCache(data), [], False
  say = lambda text: print(text, flush=True) if main else None
  for i, stage in enumerate(STAGES, 1):
    skip = distributed.agree(not rerun and is_done(config, workdir, stage))  # process 0's view, for all
    distributed.barrier(f"reproduce_check_{stage}")  # nobody deletes a done-file another is reading
    if skip:
      say(f"[stage {i}/{len(STAGES)}] {TITLES[stage]}: done, skipped")
      continue
    rerun = True
    say(f"[stage {i}/{len(STAGES)}] {TITLES[stage]}: running")
    done = _done_path(workdir, stage)
    if main and os.path.exists(done):
      os.remove(done)
    start = time.time()
    if main or stage not in HOST_STAGES:
      STAGE_FNS[stage](config, workdir, loader)
    wall = round(time.time() - start, 1)  # this start only: a stage resumed after a kill took longer in all
    write_json({"stage": stage, "hash": config_hash(config, stage), "git_commit": git_commit(),
                "wall_s_this_start": wall, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, done)
    say(f"[stage {i}/{len(STAGES)}] {TITLES[stage]}: done in {wall:.0f} s")
    distributed.barrier(f"reproduce_done_{stage}")
    ran.append(stage)
  say(f"stages run: {ran}; report: {os.path.join(workdir, 'report.md')}")
  return ran


def run_part(config, workdir: str, runs: list[str], data: Optional[dict] = None) -> None:
  """Trains only `runs` and writes their lesion sweeps, exactly as the train and lesion stages would, and
  marks no stage done: part of a study done on another machine (e.g. a GPU), whose workdir/train/<run> and
  workdir/lesion/<run> are copied into the main workdir, where `run` then keeps them (same networks). Holds
  `workdir`'s lock, as `run` does."""
  unknown = sorted(set(runs) - set(RUNS))
  if unknown:
    raise ValueError(f"--only_runs: unknown run(s) {unknown}; runs are {list(RUNS)}")
  apply_precision(config)
  loader = DataCache(data)
  with lock.hold(workdir):
    for run in runs:
      print(f"[part] training {run}", flush=True)
      train_run(config, workdir, loader, run)
    for sweep, sweep_runs in SWEEP_RUNS.items():
      for run in runs:
        if run in sweep_runs:  # (the ResNet's single sweep also lesions the plain net: list both)
          print(f"[part] lesion {sweep} of {run}", flush=True)
          lesion_run(config, workdir, loader, sweep, run)
