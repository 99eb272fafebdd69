"""The stages of the staged reproduction (`reproduction.run`): what each trains, measures or draws (the lesion
sweeps: `lesion_stage`).

Every stage reads and writes the workdir layout of `reproduction`: train/<run>/, lesion/<run>/<sweep>_<bn>.json,
paths/paths.json, variants/variants.{json,png}, report.md. Each is a function (config, workdir, data) that
writes its outputs with `write_json` (process 0 only) and returns nothing.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from absl import logging

from resnet_ensembles.training import recipes
from resnet_ensembles.store import checkpoints, lock
from resnet_ensembles.parallel import distributed
from resnet_ensembles.lesion import study as lesion_study
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.study import report
from resnet_ensembles import training
from resnet_ensembles.training import cifar as cifar_training
from resnet_ensembles.training import metrics as training_metrics
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.plots import lesion as lesion_plots
from resnet_ensembles.plots import paths as paths_plots
from resnet_ensembles.plots import variants as variant_plots
from resnet_ensembles.utils.provenance import git_commit

RUNS = ("resnet", "plain", "sd", "short", "short_fwd")
LABELS = {"resnet": "ResNet", "plain": "plain", "sd": "stochastic depth", "short": "short-path (route)",
          "short_fwd": "short-path (forward)"}
# sweep -> the runs it covers; a JSON per (first) run, the plain net rides along in the ResNet's single sweep
SWEEP_RUNS = {"single": ("resnet", "sd", "short", "short_fwd"), "multi": ("resnet", "sd", "short", "short_fwd"),
              "reorder": ("resnet",)}
TREATMENTS = "test_time_treatments.json"  # forward short-path runs: error unscaled vs scaled by K/n


def train_config(config, run: str):
  """The training config of one run: its recipe (`training.recipes`, named in config.train.runs) plus the
  study's overrides."""
  t = config.train
  c = recipes.get_config(t.runs[run])
  c.num_epochs = t.num_epochs
  c.batch_size = t.batch_size
  c.data.source = t.source
  c.data.folder = t.folder
  c.data.train_size = t.train_size
  c.data.test_size = t.test_size
  c.progress = t.progress
  if t.batch_size < 128:
    c.eval_batch_size = min(c.eval_batch_size, max(t.test_size, t.batch_size) if t.test_size else 500)
  if t.get("dtype"):  # set only when asked, so the runs (and stage hashes) of existing studies stay as they were
    c.model.dtype = t.dtype
  if t.get("conv_chunk"):  # how, not what: a run resumes across a change of it (models.EXECUTION_FIELDS)
    c.model.conv_chunk = t.conv_chunk
  if t.get("matmul_precision"):  # recorded in the run's config.json; applied process-wide by apply_precision
    c.matmul_precision = t.matmul_precision
  return c


def apply_precision(config) -> None:
  """Sets JAX's default matmul/convolution precision for this process from config.train.matmul_precision
  ("" leaves JAX's default: TF32 convolutions on recent NVIDIA GPUs, full fp32 on CPU)."""
  p = config.train.get("matmul_precision", "")
  if p:
    import jax
    jax.config.update("jax_default_matmul_precision", p)


def write_json(obj, path: str) -> None:
  if not distributed.is_main_process():  # every process computes, process 0 writes
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
  os.replace(tmp, path)


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


# ---------------------------------------------------------------- data

class DataCache:
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


def is_forward_short_path(config, run: str) -> bool:
  return train_config(config, run).train_mask.kind == "short_path_forward"


def stage_train(config, workdir: str, data: DataCache) -> None:
  for run in RUNS:
    train_run(config, workdir, data, run)


def train_run(config, workdir: str, data: DataCache, run: str) -> None:
  """Trains (or resumes, or keeps) one run in workdir/train/<run>; raises Preempted on SIGTERM. A finished run
  kept as its exported network alone (`finished_export`) is evaluated instead."""
  cfg = train_config(config, run)
  run_dir = os.path.join(workdir, "train", run)
  kept = finished_export(cfg, run_dir, len(data(cfg)["train"][1]))
  if kept is not None:  # a finished run committed as its network alone: evaluated, not trained again
    logging.info("keeping %s in %s: finished at step %d, exported network (no checkpoint)", run, run_dir, kept)
    with lock.hold(run_dir):
      model, variables, _ = checkpoints.load_trained(run_dir)
      out = dict(cifar_training.evaluate_trained(cfg, model, variables, data(cfg)["test"]), step=kept)
  else:
    logging.info("training %s (%s) in %s", run, config.train.runs[run], run_dir)
    out = training.train_and_evaluate(cfg, run_dir, data=data(cfg))
  if out.get("preempted"):  # checkpointed; the stage is not done, and nothing after it may run
    raise Preempted(f"SIGTERM while training {run} (checkpoint at step {out['step']}); rerun to resume")
  print(f"  {run}: step {out['step']}, test error {100 * out['test_error']:.2f}%", flush=True)
  if is_forward_short_path(config, run):  # Sec. 5.3 leaves the test-time treatment open: measure both
    t = lesion_study.test_time_treatments(run_dir, data(cfg)["test"], batch_size=config.lesion.batch_size)
    write_json(t, os.path.join(run_dir, TREATMENTS))
    print(f"  {run}: test error {100 * t['unscaled_error']:.2f}% unscaled, {100 * t['scaled_error']:.2f}% with "
          f"branches scaled by K/n = {t['num_active']}/{t['num_blocks']}", flush=True)


def finished_export(cfg, run_dir: str, train_images: int) -> Optional[int]:
  """The final step of a finished run kept as its exported network alone (`variables.msgpack`, as
  `checkpoints.export_variables` writes it: what `load_trained` read from its last checkpoint, without the
  optimizer state; results/repro/train/<run>), else None. Finished: metrics.jsonl's last step is the step
  `cfg` trains to. A run with a checkpoint, or unfinished, or of another model, trains (resumes) as before."""
  ckpts = os.path.join(run_dir, "checkpoints")
  if os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts)):
    return None
  if not all(os.path.exists(os.path.join(run_dir, f)) for f in
             (checkpoints.EXPORT_FILE, checkpoints.CONFIG_FILE, "metrics.jsonl")):
    return None
  if read_json(os.path.join(run_dir, checkpoints.CONFIG_FILE)).get("model") != json.loads(cfg.model.to_json()):
    return None  # another network: training it there fails at once, naming both
  total = cfg.num_epochs * (train_images // cfg.batch_size)
  if cfg.get("max_steps", -1) >= 0:
    total = min(total, cfg.max_steps)
  last = max((r["step"] for r in training_metrics.read_metrics(run_dir)), default=0)
  return last if last == total else None


def stage_paths(config, workdir: str, data: DataCache) -> None:
  pc = config.paths
  run_dir = os.path.join(workdir, "train", "resnet")
  model, variables, trained = checkpoints.load_trained(run_dir)
  out = os.path.join(workdir, "paths", "paths.json")
  if os.path.exists(out):  # e.g. from experiments/paths.py: kept when it studied this network with this config
    old = read_json(out)
    if old.get("config") == pc.to_dict() and old.get("variables_sha256") == checkpoints.fingerprint(variables):
      print(f"  paths of this network with this config already in {out}, kept", flush=True)
      return
  images, labels = data(trained)[pc.split]
  result = paths.analyze(model, variables, images, labels, pc)
  result.update(config=pc.to_dict(), git_commit=git_commit(), workdir=run_dir, model=trained.model.to_dict())
  write_json(result, out)
  r = result["effective_range"]["image"]
  print(f"  effective paths: lengths {r['lo']}-{r['hi']} of {result['num_blocks']}, "
        f"{100 * r['path_fraction']:.2f}% of all paths", flush=True)


def stage_figures(config, workdir: str, data: DataCache) -> None:
  del data
  bn = config.lesion.bn
  for sweep, runs in SWEEP_RUNS.items():
    for run in runs:
      stem = os.path.join(workdir, "lesion", run, f"{sweep}_{bn}")
      result = read_json(stem + ".json")
      lesion_plots.save(result, stem + ".png", paper=lesion_plots.paper_overlay(result))
  paths_plots.save(read_json(os.path.join(workdir, "paths", "paths.json")),
                   os.path.join(workdir, "paths", "paths.png"))
  variants = {LABELS[run]: tuple(read_json(os.path.join(workdir, "lesion", run, f"{s}_{bn}.json"))
                                 for s in ("single", "multi")) for run in SWEEP_RUNS["multi"]}
  out = os.path.join(workdir, "variants")
  os.makedirs(out, exist_ok=True)
  table = {label: variant_plots.summarize(*pair) for label, pair in variants.items()}
  write_json({"bn": bn, "git_commit": git_commit(), "summary": table}, os.path.join(out, "variants.json"))
  variant_plots.save(variants, os.path.join(out, "variants.png"))


def stage_report(config, workdir: str, data: DataCache) -> None:
  del data
  text = report.build(workdir, bn=config.lesion.bn)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(text)
