"""The paper chain's steps (`chain.steps_of` orders them): each reuses the reproduction's stage functions and
writes the files they write, so the finished chain state is a reproduction workdir.

`chain.run_steps` calls one step at a time and marks it done; a step returns what its done-file records.
"""
from __future__ import annotations

import os

import ml_collections

from resnet_ensembles.store import checkpoints
from resnet_ensembles.study import lesion_stage, report, reproduction, stages
from resnet_ensembles.study.chain import files as chain_files
from resnet_ensembles.training import metrics, speed
from resnet_ensembles.utils.provenance import git_commit

def with_bn(config, bn: str):
  c = ml_collections.ConfigDict(config.to_dict())
  c.lesion.bn = bn
  return c


def step_speed(config, workdir: str, data: stages.DataCache) -> dict:
  cfg = stages.train_config(config, "resnet")
  ch = config.chain
  partial_path = os.path.join(workdir, "chain", "speed_partial.json")  # a measurement cut by the budget continues
  result = speed.measure(cfg, data(cfg)["train"], warmup=ch.speed_warmup, timed=ch.speed_steps,
                         check_steps=ch.check_steps, partial=chain_files.read_json(partial_path),
                         save=lambda out: chain_files.write_json(out, partial_path))
  result["git_commit"] = git_commit()
  chain_files.write_json(result, os.path.join(workdir, chain_files.SPEED_FILE))
  os.remove(partial_path)
  print(f"[chain] precision: {result['choice']['name']} ({result['choice']['why']})", flush=True)
  return {"choice": result["choice"]["name"]}


def step_train(config, workdir: str, data: stages.DataCache, run: str) -> dict:
  stages.train_run(config, workdir, data, run)  # raises stages.Preempted on SIGTERM (checkpoint written)
  rows = metrics.read_metrics(os.path.join(workdir, "train", run))
  evals = [r for r in rows if "eval/test_error" in r]
  return {"trained_steps": max(r["step"] for r in rows), "test_error": evals[-1]["eval/test_error"] if evals else None}


def step_series(config, workdir: str, data: stages.DataCache, run: str) -> dict:
  """The run's sweeps and path analysis with the depth series' settings (`config.series`, the schema of
  experiments/configs/depth_series.py), into <workdir>/depth_series/<series name>/ beside the other depths'
  JSONs; each sweep continues from its finished chunks when a piece was stopped inside it."""
  from resnet_ensembles.study import depth_series  # the series' engine; the chain only points it at this run
  series = ml_collections.ConfigDict(config.series.to_dict())
  name = config.chain.series_name
  series.networks = ml_collections.ConfigDict({name: os.path.join(workdir, "train", run)})
  series.order = [name]
  series.fit_networks = []
  ran = depth_series.run(series, os.path.join(workdir, "depth_series"), data(stages.train_config(config, run)))
  return {"series": ran, "retired": retire(workdir, run)}


def step_sweeps(config, workdir: str, data: stages.DataCache, run: str) -> dict:
  if config.get("series") is not None:
    return step_series(config, workdir, data, run)
  runs, run_dir = list(config.chain.runs), os.path.join(workdir, "train", run)
  for bn in chain_files.bns(config):
    c = with_bn(config, bn)
    lc = c.lesion
    for sweep in ("single", "multi", "reorder"):
      if run not in stages.SWEEP_RUNS[sweep] and not (sweep == "single" and run == "plain"):
        continue
      if sweep == "single" and run in ("resnet", "plain") and "plain" in runs:
        # the ResNet's single-deletion JSON holds the plain net too: each half while its network is here
        n = int(len(data(stages.train_config(c, run))["test"][1]))
        part = chain_files.single_part(workdir, run, bn)
        if not lesion_stage.kept_sweep(part, lc, [run_dir], n):
          print(f"[chain] {run}: single sweep ({bn} BN), its part of lesion/resnet/single_{bn}.json", flush=True)
          net = lesion_stage.sweep_network(c, workdir, data, "single", run, part)
          lesion_stage.write_sweep(lc, "single", [net], n, part, run)
        if run == "plain":
          nets = [stages.read_json(chain_files.single_part(workdir, r, bn))["networks"][0] for r in ("resnet", "plain")]
          whole = os.path.join(workdir, "lesion", "resnet", f"single_{bn}.json")
          lesion_stage.write_sweep(lc, "single", nets, n, whole, "resnet")  # parts go when done (chain._drop_parts)
        continue
      print(f"[chain] {run}: {sweep} sweep ({bn} BN)", flush=True)
      lesion_stage.lesion_run(c, workdir, data, sweep, run)
  if run == "resnet":
    print("[chain] resnet: path analysis", flush=True)
    stages.stage_paths(config, workdir, data)
  return {"retired": retire(workdir, run)}


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
  for bn in chain_files.bns(config)[::-1]:  # lesion.bn last: variants/variants.{json,png} are the reproduction's
    stages.stage_figures(with_bn(config, bn), workdir, data)
    if bn != config.lesion.bn:
      for ext in ("json", "png"):
        os.replace(os.path.join(workdir, "variants", f"variants.{ext}"),
                   os.path.join(workdir, "variants", f"variants_{bn}.{ext}"))
  return {}


def step_report(config, workdir: str, data: stages.DataCache) -> dict:
  stages.stage_report(config, workdir, data)
  for bn in chain_files.bns(config)[1:]:
    with open(os.path.join(workdir, f"report_{bn}.md"), "w") as f:
      f.write(report.build(workdir, bn=bn))
  for stage in reproduction.STAGES:  # the finished state reads as a finished reproduction
    stages.write_json({"stage": stage, "hash": reproduction.config_hash(config, stage), "git_commit": git_commit(),
                       "wall_s_this_start": None, "finished": chain_files.utc(), "by": "experiments/paper_chain.py"},
                      os.path.join(workdir, f"{stage}.done.json"))
  return {}
