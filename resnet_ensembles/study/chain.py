"""The staged reproduction in an order whose state travels: what one piece of experiments/paper_chain.py runs.

`reproduction.run` trains all five networks before it sweeps any; for the paper's ResNet-110 (a 13.9 MB
checkpoint with optimizer state, 6.9 MB of variables) five networks do not fit in what a lent machine is sent
(64 MiB with the code, the results already committed and the 18 MB CIFAR-10 pack). So the chain takes one
network at a time through everything it is needed for, then lets it go (`retire`: its variables leave the
state; `chain_files` commits them to git history once, outside what travels). Steps, in order (`steps_of`):

  speed            images/s per precision and the bf16 accuracy check (training.speed); picks the precision
  train-resnet     stages.train_run: the paper's recipe, resumed from the checkpoint, SIGTERM -> checkpoint
  sweeps-resnet    lesion multi + reorder, single (this network's half of the JSON it shares with the plain
                   net), for lesion.bn and each chain.extra_bn; the path analysis; then retire
  train-plain, sweeps-plain   the plain net's half of the single-deletion JSONs, which are then written whole
  train-sd, sweeps-sd, train-short, sweeps-short, train-short_fwd, sweeps-short_fwd   single + multi each
  figures, report  stages.stage_figures / stage_report per BatchNorm treatment; the reproduction's done files

Every step reuses the reproduction's stage functions (stages.*) and writes the files they write, so the
finished state is a reproduction workdir: `experiments/reproduce.py --workdir=<state>` finds every stage
done. A step is done when chain/<step>.done.json exists; within a step, sweeps already written for the same
network and settings are kept (lesion_stage.kept_sweep), so a step cut by the budget continues.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import time

import jax
import ml_collections

from resnet_ensembles.store import checkpoints
from resnet_ensembles.study import chain_files, lesion_stage, report, reproduction, stages
from resnet_ensembles.training import metrics, speed
from resnet_ensembles.utils.provenance import git_commit

SPEED_FILE = os.path.join("chain", "speed.json")


def steps_of(config) -> list[str]:
  runs = list(config.chain.runs)
  unknown = sorted(set(runs) - set(stages.RUNS))
  if unknown or runs[:2] != ["resnet", "plain"] or len(set(runs)) != len(runs):
    raise ValueError(f"chain.runs must start with resnet, plain and name runs of {stages.RUNS} once; got {runs}")
  out = ["speed"] + [f"{kind}-{run}" for run in runs for kind in ("train", "sweeps")]
  return out + (["figures", "report"] if set(runs) == set(stages.RUNS) else [])


def done_path(workdir: str, step: str) -> str:
  return os.path.join(workdir, "chain", f"{step}.done.json")


def is_done(workdir: str, step: str) -> bool:
  return os.path.exists(done_path(workdir, step))


def done_steps(config, workdir: str) -> list[str]:
  return [s for s in steps_of(config) if is_done(workdir, s)]


def live_runs(config, workdir: str) -> list[str]:
  """Runs whose network a later step still needs (trained or in training, sweeps not done)."""
  return [r for r in config.chain.runs if not is_done(workdir, f"sweeps-{r}")]


def with_bn(config, bn: str):
  c = ml_collections.ConfigDict(config.to_dict())
  c.lesion.bn = bn
  return c


def bns(config) -> list[str]:
  return [config.lesion.bn] + [b for b in config.chain.extra_bn if b != config.lesion.bn]


def with_precision(config, workdir: str):
  """The config with the precision that the speed step chose (config.train.dtype / matmul_precision)."""
  measured = chain_files.read_json(os.path.join(workdir, SPEED_FILE))
  if measured is None:
    return config
  c = ml_collections.ConfigDict(config.to_dict())
  c.train.dtype = measured["choice"]["dtype"]
  c.train.matmul_precision = measured["choice"]["matmul_precision"]
  return c


def machine() -> dict:
  d = jax.devices()[0]
  return {"host": socket.gethostname(), "devices": f"{jax.device_count()} x {d.device_kind}",
          "platform": jax.default_backend(), "jax": jax.__version__, "python": platform.python_version()}


def _mark(workdir: str, step: str, start: float, **extra) -> None:
  chain_files.write_json({"step": step, "git_commit": git_commit(), "wall_s_this_start": round(time.time() - start, 1),
                          "finished": chain_files.utc(), **extra}, done_path(workdir, step))
  print(f"[chain] {step}: done in {time.time() - start:.0f} s", flush=True)


# ---------------------------------------------------------------- steps

def step_speed(config, workdir: str, data: stages.DataCache) -> dict:
  cfg = stages.train_config(config, "resnet")
  ch = config.chain
  partial_path = os.path.join(workdir, "chain", "speed_partial.json")  # a measurement cut by the budget continues
  result = speed.measure(cfg, data(cfg)["train"], warmup=ch.speed_warmup, timed=ch.speed_steps,
                         check_steps=ch.check_steps, partial=chain_files.read_json(partial_path),
                         save=lambda out: chain_files.write_json(out, partial_path))
  result["git_commit"] = git_commit()
  chain_files.write_json(result, os.path.join(workdir, SPEED_FILE))
  os.remove(partial_path)
  print(f"[chain] precision: {result['choice']['name']} ({result['choice']['why']})", flush=True)
  return {"choice": result["choice"]["name"]}


def step_train(config, workdir: str, data: stages.DataCache, run: str) -> dict:
  stages.train_run(config, workdir, data, run)  # raises stages.Preempted on SIGTERM (checkpoint written)
  rows = metrics.read_metrics(os.path.join(workdir, "train", run))
  evals = [r for r in rows if "eval/test_error" in r]
  return {"trained_steps": max(r["step"] for r in rows), "test_error": evals[-1]["eval/test_error"] if evals else None}


def _single_part(workdir: str, run: str, bn: str) -> str:
  return os.path.join(workdir, "lesion", "resnet", f"single_{bn}.{run}.json")


def step_sweeps(config, workdir: str, data: stages.DataCache, run: str) -> dict:
  runs, run_dir = list(config.chain.runs), os.path.join(workdir, "train", run)
  for bn in bns(config):
    c = with_bn(config, bn)
    lc = c.lesion
    for sweep in ("single", "multi", "reorder"):
      if run not in stages.SWEEP_RUNS[sweep] and not (sweep == "single" and run == "plain"):
        continue
      if sweep == "single" and run in ("resnet", "plain") and "plain" in runs:
        # the ResNet's single-deletion JSON holds the plain net too: each half while its network is here
        n = int(len(data(stages.train_config(c, run))["test"][1]))
        part = _single_part(workdir, run, bn)
        if not lesion_stage.kept_sweep(part, lc, [run_dir], n):
          print(f"[chain] {run}: single sweep ({bn} BN), its part of lesion/resnet/single_{bn}.json", flush=True)
          net = lesion_stage.sweep_network(c, workdir, data, "single", run, part)
          lesion_stage.write_sweep(lc, "single", [net], n, part, run)
        if run == "plain":
          nets = [stages.read_json(_single_part(workdir, r, bn))["networks"][0] for r in ("resnet", "plain")]
          lesion_stage.write_sweep(lc, "single", nets, n, os.path.join(workdir, "lesion", "resnet", f"single_{bn}.json"),
                             "resnet")  # the parts go once this step is marked done (`_drop_parts`)
        continue
      print(f"[chain] {run}: {sweep} sweep ({bn} BN)", flush=True)
      lesion_stage.lesion_run(c, workdir, data, sweep, run)
  if run == "resnet":
    print("[chain] resnet: path analysis", flush=True)
    stages.stage_paths(config, workdir, data)
  return {"retired": retire(workdir, run)}


def _drop_parts(config, workdir: str) -> None:
  """The halves of the single-deletion JSONs, once sweeps-plain (which writes them whole) is done."""
  if is_done(workdir, "sweeps-plain"):
    for bn in bns(config):
      for r in ("resnet", "plain"):
        if os.path.exists(_single_part(workdir, r, bn)):
          os.remove(_single_part(workdir, r, bn))


def retire(workdir: str, run: str) -> dict:
  """Exports the run's network (variables, config) to the work folder's retired/<run> for networks.tar; the
  checkpoint stays in the work folder but no longer in the state (`live_runs`)."""
  model, variables, config = checkpoints.load_trained(os.path.join(workdir, "train", run))
  del model
  out = os.path.join(workdir, chain_files.RETIRED, run)
  checkpoints.export_variables(variables, config, out)
  return {"variables_sha256": checkpoints.fingerprint(variables),
          "bytes": os.path.getsize(os.path.join(out, checkpoints.EXPORT_FILE))}


def step_figures(config, workdir: str, data: stages.DataCache) -> dict:
  for bn in bns(config)[::-1]:  # lesion.bn last: variants/variants.{json,png} are the reproduction's
    stages.stage_figures(with_bn(config, bn), workdir, data)
    if bn != config.lesion.bn:
      for ext in ("json", "png"):
        os.replace(os.path.join(workdir, "variants", f"variants.{ext}"),
                   os.path.join(workdir, "variants", f"variants_{bn}.{ext}"))
  return {}


def step_report(config, workdir: str, data: stages.DataCache) -> dict:
  stages.stage_report(config, workdir, data)
  for bn in bns(config)[1:]:
    with open(os.path.join(workdir, f"report_{bn}.md"), "w") as f:
      f.write(report.build(workdir, bn=bn))
  for stage in reproduction.STAGES:  # the finished state reads as a finished reproduction
    stages.write_json({"stage": stage, "hash": reproduction.config_hash(config, stage), "git_commit": git_commit(),
                       "wall_s_this_start": None, "finished": chain_files.utc(), "by": "experiments/paper_chain.py"},
                      os.path.join(workdir, f"{stage}.done.json"))
  return {}


def run_steps(config, workdir: str, stop_after: str = "") -> list[str]:
  """Runs every step not done yet, in order; returns those it finished. Raises stages.Preempted when SIGTERM
  stops a training step (with a checkpoint); any other step simply dies with the signal."""
  chain_files.write_json(machine(), os.path.join(workdir, "chain", "machine.json"))
  data, ran = stages.DataCache(), []
  for step in steps_of(config):
    if is_done(workdir, step):
      continue
    cfg = with_precision(config, workdir)
    stages.apply_precision(cfg)
    print(f"[chain] {step}: running (precision: dtype {cfg.train.dtype or 'float32'}, matmul "
          f"{cfg.train.matmul_precision or 'default'})", flush=True)
    start = time.time()
    kind, _, run = step.partition("-")
    if kind == "train":
      extra = step_train(cfg, workdir, data, run)
    elif kind == "sweeps":
      extra = step_sweeps(cfg, workdir, data, run)
    else:
      extra = {"speed": step_speed, "figures": step_figures, "report": step_report}[step](cfg, workdir, data)
    _mark(workdir, step, start, **extra)
    if kind == "sweeps":  # its network is in networks.tar now; the state keeps no checkpoint of it
      shutil.rmtree(os.path.join(workdir, "train", run, "checkpoints"), ignore_errors=True)
    _drop_parts(config, workdir)
    ran.append(step)
    if step == stop_after:
      break
  return ran


def describe(config, workdir: str) -> dict:
  """Where the chain stands: steps done, the next one, each run's trained steps."""
  done = done_steps(config, workdir)
  todo = [s for s in steps_of(config) if s not in done]
  trained = {}
  for run in config.chain.runs:
    path = os.path.join(workdir, "train", run, "metrics.jsonl")
    if os.path.exists(path):
      with open(path) as f:
        rows = [json.loads(l) for l in f if l.strip()]
      trained[run] = max((r["step"] for r in rows), default=0)
  return {"done": done, "next": todo[0] if todo else None, "trained_steps": trained}
