"""The staged reproduction in an order whose state travels: what one piece of experiments/paper_chain.py runs.

`reproduction.run` trains all five networks before it sweeps any; for the paper's ResNet-110 (a 13.9 MB
checkpoint with optimizer state, 6.9 MB of variables) five networks do not fit in what a remote machine is sent
(64 MiB with the code, the results already committed and the 18 MB CIFAR-10 pack). So the chain takes one
network at a time through everything it is needed for, then lets it go (`steps.retire`: its variables
leave the state; `git` commits them to git history once, outside what travels). Steps, in order
(`steps_of`; their bodies are in `steps`):

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

import ml_collections

from resnet_ensembles.study.chain import files as chain_files
from resnet_ensembles.utils import logs
from resnet_ensembles.utils.provenance import git_commit

# What a piece's supervisor, --status and --absorb read (the steps, where the chain stands) needs no JAX: the
# modules that compute (stages, steps) are imported where the steps run, so those commands start in a moment.

def steps_of(config) -> list[str]:
  runs, study_runs = list(config.chain.runs), tuple(config.train.runs)  # the study's runs, as stages.RUNS
  unknown = sorted(set(runs) - set(study_runs))
  if unknown or runs[:1] != ["resnet"] or ("plain" in runs and runs[1] != "plain") or len(set(runs)) != len(runs):
    raise ValueError(f"chain.runs must start with resnet (then plain, if at all) and name runs of {study_runs} "
                     f"once; got {runs}")
  out = ["speed"] if config.chain.get("speed", True) else []
  out += [f"{kind}-{run}" for run in runs for kind in ("train", "sweeps")]
  return out + (["figures", "report"] if set(runs) == set(study_runs) else [])


def done_path(workdir: str, step: str) -> str:
  return os.path.join(workdir, "chain", f"{step}.done.json")


def is_done(workdir: str, step: str) -> bool:
  return os.path.exists(done_path(workdir, step))


def done_steps(config, workdir: str) -> list[str]:
  return [s for s in steps_of(config) if is_done(workdir, s)]


def live_runs(config, workdir: str) -> list[str]:
  """Runs whose network a later step still needs (trained or in training, sweeps not done)."""
  return [r for r in config.chain.runs if not is_done(workdir, f"sweeps-{r}")]


def with_precision(config, workdir: str):
  """The config with the precision that the speed step chose (config.train.dtype / matmul_precision)."""
  measured = chain_files.read_json(os.path.join(workdir, chain_files.SPEED_FILE))
  if measured is None:
    return config
  c = ml_collections.ConfigDict(config.to_dict())
  c.train.dtype = measured["choice"]["dtype"]
  c.train.matmul_precision = measured["choice"]["matmul_precision"]
  return c


VECTOR_EXTENSIONS = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "avx2", "fma", "avx", "sse4_2", "asimd")


def cpu() -> dict:
  """The processor's model and the vector extensions XLA's CPU code may use: the float summation order (so the
  bits of a resumed training) can change where these change between pieces."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
          model = value.strip()
        elif key.strip() in ("flags", "Features"):
          flags |= set(value.split())
  except OSError:  # not Linux: the model alone
    pass
  return {"cpu": model, "cpu_cores": os.cpu_count(),
          "vector_extensions": [x for x in VECTOR_EXTENSIONS if x in flags]}


def machine() -> dict:
  import jax
  d = jax.devices()[0]
  return {"host": socket.gethostname(), "devices": f"{jax.device_count()} x {d.device_kind}",
          "platform": jax.default_backend(), **cpu(), "jax": jax.__version__, "python": platform.python_version()}


def _mark(workdir: str, step: str, start: float, **extra) -> None:
  chain_files.write_json({"step": step, "git_commit": git_commit(), "wall_s_this_start": round(time.time() - start, 1),
                          "finished": chain_files.utc(), **extra}, done_path(workdir, step))
  print(f"[chain] {step}: done in {time.time() - start:.0f} s", flush=True)


def _drop_parts(config, workdir: str) -> None:
  """The halves of the single-deletion JSONs, once sweeps-plain (which writes them whole) is done."""
  if is_done(workdir, "sweeps-plain"):
    for bn in chain_files.bns(config):
      for r in ("resnet", "plain"):
        if os.path.exists(chain_files.single_part(workdir, r, bn)):
          os.remove(chain_files.single_part(workdir, r, bn))


def run_steps(config, workdir: str, stop_after: str = "") -> list[str]:
  """Runs every step not done yet, in order; returns those it finished. Raises stages.Preempted when SIGTERM
  stops a training step (with a checkpoint); any other step simply dies with the signal."""
  from resnet_ensembles.study import stages
  from resnet_ensembles.study.chain import steps as chain_steps
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
      extra = chain_steps.step_train(cfg, workdir, data, run)
    elif kind == "sweeps":
      extra = chain_steps.step_sweeps(cfg, workdir, data, run)
    else:
      extra = {"speed": chain_steps.step_speed, "figures": chain_steps.step_figures,
               "report": chain_steps.step_report}[step](cfg, workdir, data)
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


def status_markdown(config, state_dir: str) -> str:
  """Where the chain stands, for a person: the steps, then one row per piece of <state>/chain_log.jsonl."""
  d = describe(config, state_dir)
  total = config.train  # every run of the study trains num_epochs at batch_size (stages.train_config)
  lines = [f"Steps done: {', '.join(d['done']) or 'none yet'}; next: {d['next'] or 'none (finished)'}. "
           f"Training steps done: " + (", ".join(f"{r} {s:,}" for r, s in d["trained_steps"].items()) or "none") +
           f" (of {total.num_epochs} epochs: "
           f"{total.num_epochs * ((config.train.train_size or 50_000) // total.batch_size):,} steps).\n",
           "| piece | started (UTC) | wall s | stopped | steps | images/s | machine | vector extensions | commit |",
           "| ---: | --- | ---: | --- | --- | ---: | --- | --- | --- |"]
  path = os.path.join(state_dir, chain_files.LOG_FILE)
  rows = [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
  for r in rows:
    m = r.get("machine") or {}
    steps = "; ".join(f"{run} {a:,} -> {b:,}" for run, (a, b) in (r.get("train_steps") or {}).items()) or (
        ", ".join(r.get("steps_done_now") or []) or "-")
    wall = r.get("wall_s")
    lines.append(f"| {r.get('piece', '?')} | {r.get('started', '-')} | {'-' if wall is None else f'{wall:,.0f}'} | "
                 f"{r.get('stopped', '-')} | {steps} | "
                 f"{r.get('train_images_per_s') or '-'} | {m.get('cpu') or m.get('devices', '-')} "
                 f"({m.get('devices', '-')}, {m.get('cpu_cores', '?')} cores) | "
                 f"{', '.join(m.get('vector_extensions') or []) or '-'} | {str(r.get('git_commit', ''))[:10]} |")
  steps_total = total.num_epochs * ((config.train.train_size or 50_000) // total.batch_size)
  left = sum(max(steps_total - d["trained_steps"].get(run, 0), 0) for run in config.chain.runs)
  rate = next((r["train_images_per_s"] for r in reversed(rows) if r.get("train_images_per_s")), None)
  if left and rate:  # a planning figure: the last piece's rate, whatever else shared its machine
    lines.append(f"\nTraining left: {left:,} steps ({left * total.batch_size:,} images), "
                 f"{logs.duration(left * total.batch_size / rate)} at the last piece's {rate} images/s.")
  return "\n".join(lines) + "\n"
