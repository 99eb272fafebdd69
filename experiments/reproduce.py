r"""The whole Veit et al. study as resumable stages: train -> lesion sweeps -> paths -> figures -> report.

  python -m experiments.reproduce --config=experiments/configs/reproduce.py:cpu --workdir=runs/repro

Each stage writes its outputs and `<workdir>/<stage>.done.json` (a hash of its config section). A stage is
skipped when its outputs and done-file exist and the hash matches; once a stage reruns, every later stage
reruns too. Training resumes from its own checkpoints, so a rerun after a kill continues where it stopped.
Layout: train/{resnet,plain,sd,short}/, lesion/<run>/{single,multi,reorder}_<bn>.json (+ .csv, .png),
paths/paths.json (+ .png), variants/variants.{json,png}, report.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from typing import Callable, Optional

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.configs import cifar10 as cifar10_config
from resnet_ensembles import checkpoints, distributed, lesion_study, paper, paths, report, train
from resnet_ensembles import data as data_lib
from resnet_ensembles.logs import one_line_errors
from resnet_ensembles.plots import lesion as lesion_plots
from resnet_ensembles.plots import paths as paths_plots
from resnet_ensembles.plots import variants as variant_plots
from resnet_ensembles.provenance import git_commit

RUNS = ("resnet", "plain", "sd", "short", "short_fwd")
LABELS = {"resnet": "ResNet", "plain": "plain", "sd": "stochastic depth", "short": "short-path (route)",
          "short_fwd": "short-path (forward)"}
# sweep -> the runs it covers; a JSON per (first) run, the plain net rides along in the ResNet's single sweep
SWEEP_RUNS = {"single": ("resnet", "sd", "short", "short_fwd"), "multi": ("resnet", "sd", "short", "short_fwd"),
              "reorder": ("resnet",)}
TREATMENTS = "test_time_treatments.json"  # forward short-path runs: error unscaled vs scaled by K/n
STAGES = ("train", "lesion_single", "lesion_multi", "lesion_reorder", "paths", "figures", "report")
TITLES = {"train": "train", "lesion_single": "lesion single", "lesion_multi": "lesion multi",
          "lesion_reorder": "lesion reorder", "paths": "paths", "figures": "figures", "report": "report"}


# ---------------------------------------------------------------- configs and hashes

def train_config(config, run: str):
  """The training config of one run: experiments/configs/cifar10.py plus the reproduce overrides."""
  t = config.train
  c = cifar10_config.get_config(t.runs[run])
  c.num_epochs = t.num_epochs
  c.batch_size = t.batch_size
  c.data.source = t.source
  c.data.folder = t.folder
  c.data.train_size = t.train_size
  c.data.test_size = t.test_size
  c.progress = t.progress
  if t.batch_size < 128:
    c.eval_batch_size = min(c.eval_batch_size, max(t.test_size, t.batch_size) if t.test_size else 500)
  return c


def section(config, stage: str) -> dict:
  if stage == "train":
    return {run: train_config(config, run).to_dict() for run in RUNS}
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
        os.path.join(workdir, "train", run, TREATMENTS) for run in RUNS if _forward_short_path(config, run)]
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


def _json(obj, path: str) -> None:
  if not distributed.is_main_process():  # every process computes, process 0 writes
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
  os.replace(tmp, path)


def _load(path: str):
  with open(path) as f:
    return json.load(f)


# ---------------------------------------------------------------- data

class _Data:
  """Decodes each CIFAR-10 source once per `run` (or takes the caller's full dataset) and subsets it."""

  def __init__(self, full: Optional[dict] = None):
    self.full = {} if full is None else {None: full}

  def __call__(self, cfg) -> dict:
    d = cfg.data
    if None in self.full:
      full = self.full[None]
    else:
      key = (d.source, d.folder, d.cache_dir)
      if key not in self.full:
        self.full[key] = data_lib.load_cifar10(d.source, d.folder or None, d.cache_dir or None)
      full = self.full[key]
    return {"train": data_lib.subset(full["train"], d.train_size, d.subset_seed),
            "test": data_lib.subset(full["test"], d.test_size, d.subset_seed + 1)}


# ---------------------------------------------------------------- stages

class Preempted(Exception):
  """Training stopped on a preemption notice; the run continues when the command is rerun."""


def _forward_short_path(config, run: str) -> bool:
  return train_config(config, run).train_mask.kind == "short_path_forward"


def stage_train(config, workdir: str, data: _Data) -> None:
  for run in RUNS:
    cfg = train_config(config, run)
    run_dir = os.path.join(workdir, "train", run)
    logging.info("training %s (%s) in %s", run, config.train.runs[run], run_dir)
    out = train.train_and_evaluate(cfg, run_dir, data=data(cfg))
    if out.get("preempted"):  # checkpointed; the stage is not done, and nothing after it may run
      raise Preempted(f"SIGTERM while training {run} (checkpoint at step {out['step']}); rerun to resume")
    print(f"  {run}: step {out['step']}, test error {100 * out['test_error']:.2f}%", flush=True)
    if _forward_short_path(config, run):  # Sec. 5.3 leaves the test-time treatment open: measure both
      t = lesion_study.test_time_treatments(run_dir, data(cfg)["test"], batch_size=config.lesion.batch_size)
      _json(t, os.path.join(run_dir, TREATMENTS))
      print(f"  {run}: test error {100 * t['unscaled_error']:.2f}% unscaled, {100 * t['scaled_error']:.2f}% with "
            f"branches scaled by K/n = {t['num_active']}/{t['num_blocks']}", flush=True)


def _lesion_args(lc) -> dict:
  return dict(bn=lc.bn, num_samples=lc.num_samples, max_k=lc.max_k, seed=lc.seed, batch_size=lc.batch_size,
              memory_budget_mb=lc.memory_budget_mb)


def stage_lesion(sweep: str) -> Callable:
  def run_stage(config, workdir: str, data: _Data) -> None:
    lc = config.lesion
    for run in SWEEP_RUNS[sweep]:
      cfg = train_config(config, run)
      d = data(cfg)
      run_dir = os.path.join(workdir, "train", run)
      nets = [lesion_study.sweep_network(run_dir, LABELS[run], d, sweep, **_lesion_args(lc))]
      if sweep == "single" and run == "resnet":
        nets.append(lesion_study.sweep_network(os.path.join(workdir, "train", "plain"), "plain", d, sweep,
                                               **_lesion_args(lc)))
      result = {"sweep": sweep, "bn": lc.bn, "git_commit": git_commit(), "flags": lc.to_dict(),
                "test_images": int(len(d["test"][1])), "networks": nets}
      _json(result, os.path.join(workdir, "lesion", run, f"{sweep}_{lc.bn}.json"))
      for net in nets:
        errs = [r["error"] for r in net["rows"]]
        print(f"  {run}/{net['label']}: full {100 * net['full_error']:.2f}%, {len(errs)} {sweep} lesions "
              f"{100 * min(errs):.2f}-{100 * max(errs):.2f}%", flush=True)
  return run_stage


def stage_paths(config, workdir: str, data: _Data) -> None:
  pc = config.paths
  run_dir = os.path.join(workdir, "train", "resnet")
  model, variables, trained = checkpoints.load_trained(run_dir)
  images, labels = data(trained)[pc.split]
  result = paths.analyze(model, variables, images, labels, pc)
  result.update(config=pc.to_dict(), git_commit=git_commit(), workdir=run_dir, model=trained.model.to_dict())
  _json(result, os.path.join(workdir, "paths", "paths.json"))
  r = result["effective_range"]["image"]
  print(f"  effective paths: lengths {r['lo']}-{r['hi']} of {result['num_blocks']}, "
        f"{100 * r['path_fraction']:.2f}% of all paths", flush=True)


def stage_figures(config, workdir: str, data: _Data) -> None:
  del data
  bn = config.lesion.bn
  for sweep, runs in SWEEP_RUNS.items():
    for run in runs:
      stem = os.path.join(workdir, "lesion", run, f"{sweep}_{bn}")
      result = _load(stem + ".json")
      nets = {n["label"]: n["num_blocks"] for n in result["networks"]}
      overlay = paper.lesion_overlays(nets.get("ResNet", 0), nets.get("plain"))[sweep] if run == "resnet" else None
      lesion_plots.save(result, stem + ".png", paper=overlay)
  paths_plots.save(_load(os.path.join(workdir, "paths", "paths.json")),
                   os.path.join(workdir, "paths", "paths.png"))
  variants = {LABELS[run]: tuple(_load(os.path.join(workdir, "lesion", run, f"{s}_{bn}.json"))
                                 for s in ("single", "multi")) for run in SWEEP_RUNS["multi"]}
  out = os.path.join(workdir, "variants")
  os.makedirs(out, exist_ok=True)
  table = {label: variant_plots.summarize(*pair) for label, pair in variants.items()}
  _json({"bn": bn, "git_commit": git_commit(), "summary": table}, os.path.join(out, "variants.json"))
  variant_plots.save(variants, os.path.join(out, "variants.png"))


def stage_report(config, workdir: str, data: _Data) -> None:
  del data
  text = report.build(workdir, bn=config.lesion.bn)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(text)


HOST_STAGES = ("figures", "report")  # no devices involved: process 0 alone
STAGE_FNS = {"train": stage_train, "lesion_single": stage_lesion("single"), "lesion_multi": stage_lesion("multi"),
             "lesion_reorder": stage_lesion("reorder"), "paths": stage_paths, "figures": stage_figures,
             "report": stage_report}


def run(config, workdir: str, data: Optional[dict] = None) -> list[str]:
  """Runs every stage not already done for this config; returns the stages that ran.

  `data`: optionally the full CIFAR-10 dataset ({"train", "test"} splits), so nothing is decoded again.
  On several processes (a shared workdir) every process runs the device stages, process 0 alone writes,
  and all of them meet at a barrier before and after each stage, so they take the same decisions."""
  main = distributed.is_main_process()
  os.makedirs(workdir, exist_ok=True)
  loader, ran, rerun = _Data(data), [], False
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
    if main or stage not in HOST_STAGES:
      STAGE_FNS[stage](config, workdir, loader)
    _json({"stage": stage, "hash": config_hash(config, stage), "git_commit": git_commit()}, done)
    distributed.barrier(f"reproduce_done_{stage}")
    ran.append(stage)
  say(f"stages run: {ran}; report: {os.path.join(workdir, 'report.md')}")
  return ran


_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "reproduce.py"),
    "Reproduce config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where every stage writes.")
flags.mark_flags_as_required(["workdir"])
distributed.define_flags()


@one_line_errors
def main(argv):
  distributed.start_main(argv)
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except Preempted as e:
    print(f"stopped: {e}", flush=True)
    sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
  app.run(main)
