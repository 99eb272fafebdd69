"""The lesion and path study of several trained networks of different depth (experiments/depth_series.py).

Per network (a workdir or an exported/imported folder) and per BatchNorm treatment (stored statistics, or
recalibrated after each lesion), the three sweeps of Veit et al. Figs. 3-5 and the Fig. 6 path analysis, in
`<workdir>/<name>/{single,multi,reorder}_<bn>.json` and `<name>/paths.json` (the JSON schema of
experiments/lesion.py and experiments/paths.py, so their figures draw them). A sweep already written for
the same network and settings is kept, so a killed run continues with the next sweep (and, inside a sweep,
with its next chunk where the sweep engine keeps chunks). `series.summarize` turns them into the table.
"""
from __future__ import annotations

import os
import shutil
import time

from absl import logging

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion import progress, study as lesion_study, sweep as lesion_sweep
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.store import checkpoints
from resnet_ensembles.study.stages import read_json, write_json
from resnet_ensembles.utils.provenance import git_commit

SWEEPS = lesion_study.SWEEPS


def sweep_settings(config, sweep: str, bn: str) -> dict:
  """Everything a sweep's numbers depend on (not its chunking)."""
  s = config[sweep]
  return {"sweep": sweep, "bn": bn, "num_samples": s.get("num_samples", 1), "max_k": s.get("max_k", 1),
          "seed": s.get("seed", 0), "test_images": s.test_images, "recal_batches": config.recal_batches,
          "recal_batch_size": config.recal_batch_size,
          **({"recalibration": lesion_study.recalibration(bn)} if bn in lesion_sweep.RECAL_MODES else {}),
          **({"ks": [int(k) for k in s.ks]} if sweep == "multi" and s.get("ks") else {})}


def check_config(config) -> None:
  """One-line errors before any data is read or anything compiles."""
  if not config.networks:
    raise ValueError("depth series: config.networks is empty")
  for name, path in config.networks.items():
    if not os.path.exists(os.path.join(path, checkpoints.CONFIG_FILE)):
      raise FileNotFoundError(f"depth series: network {name!r} at {path} is not a trained network folder")
  for bn in config.bns:
    if bn not in lesion_sweep.BN_MODES:
      raise ValueError(f"depth series: bns must be one of {lesion_sweep.BN_MODES}, got {bn!r}")
  if "painters" in config.get("sweeps", SWEEPS) and tuple(config.bns) != ("stored",):
    raise ValueError("depth series: the painters sweep runs with the network as trained: set bns=('stored',)")
  for sweep in config.get("sweeps", SWEEPS):
    lesion_study.check_sweep_args(sweep, num_samples=config[sweep].get("num_samples", 1),
                                  max_k=config[sweep].get("max_k", 1), batch_size=config.batch_size)
  ks = list(config.multi.get("ks") or ())
  if ks and (any(int(k) != k or k < 1 for k in ks) or ks != sorted(set(ks))):
    raise ValueError(f"depth series: multi.ks must be increasing whole numbers >= 1, got {tuple(ks)}")


def _test_split(data: dict, images: int, seed: int):
  return data_lib.subset(data["test"], images, seed) if images else data["test"]


def sweep_one(config, workdir: str, data: dict, name: str, path: str, sweep: str, bn: str,
              loaded: tuple | None = None) -> str:
  """One sweep of one network; kept when the JSON holds this network under these settings. `loaded`:
  what `checkpoints.load_trained(path)` returned, when the caller has it already."""
  out = os.path.join(workdir, name, f"{sweep}_{bn}.json")
  settings = sweep_settings(config, sweep, bn)
  loaded = loaded or checkpoints.load_trained(path)
  sha = checkpoints.fingerprint(loaded[1])
  if os.path.exists(out):
    old = read_json(out)
    if old.get("settings") == settings and old["networks"][0].get("variables_sha256") == sha:
      progress.discard(out)  # killed between writing the JSON and removing its chunks
      return "kept"
  split = {"test": _test_split(data, settings["test_images"], config.subset_seed), "train": data["train"]}
  kwargs = dict(bn=bn, num_samples=settings["num_samples"], max_k=settings["max_k"], seed=settings["seed"],
                batch_size=config.batch_size, memory_budget_mb=config.memory_budget_mb,
                recal_batches=config.recal_batches, recal_batch_size=config.recal_batch_size,
                ks=settings.get("ks"))
  t0 = time.time()
  # finished chunks go to <out>.partial/<name>/ as they finish: a rerun after a kill continues there
  net = lesion_study.sweep_network(path, name, split, sweep, resume_dir=progress.partial_dir(out, name),
                                   loaded=loaded, **kwargs)
  write_json({"sweep": sweep, "bn": bn, "git_commit": git_commit(), "settings": settings,
              "flags": {k: settings[k] for k in ("bn", "num_samples", "max_k", "seed")},
              "test_images": int(len(split["test"][1])), "wall_s": time.time() - t0, "networks": [net]}, out)
  progress.discard(out)
  return f"{time.time() - t0:.0f} s"


def paths_one(config, workdir: str, data: dict, name: str, path: str, loaded: tuple | None = None) -> str:
  out = os.path.join(workdir, name, "paths.json")
  model, variables, trained = loaded or checkpoints.load_trained(path)
  pc = config.paths
  if os.path.exists(out):
    old = read_json(out)
    if old.get("config") == pc.to_dict() and old.get("variables_sha256") == checkpoints.fingerprint(variables):
      return "kept"
  images, labels = data[pc.split]
  t0 = time.time()
  result = paths.analyze(model, variables, images, labels, pc)
  result.update(config=pc.to_dict(), git_commit=git_commit(), workdir=path, model=trained.model.to_dict(),
                label=name)
  write_json(result, out)
  return f"{time.time() - t0:.0f} s"


def check_start_from(source: str) -> None:
  """A one-line error when `source` (--start_from) is not a folder; the main calls it before creating the workdir."""
  if not os.path.isdir(source):
    raise FileNotFoundError(f"depth series: --start_from {source} is not a folder")


def seed_workdir(source: str, workdir: str, names: list[str]) -> list[str]:
  """Copies each network's finished sweeps and kept chunks (`<name>/*.json`, `<name>/*.json.partial/`) from
  `source` (e.g. the committed results/depth_series) into `workdir` where the workdir lacks them, so a run on
  a machine that lost its workdir continues from what was committed. Nothing in the workdir is overwritten;
  what is copied is checked like the workdir's own (settings and network fingerprint, chunk keys) before use.
  Returns the copied paths, relative to `source`."""
  check_start_from(source)
  copied = []
  for name in names:
    src = os.path.join(source, name)
    if not os.path.isdir(src):
      continue
    for entry in sorted(os.listdir(src)):
      if not (entry.endswith(".json") or entry.endswith(".json" + progress.SUFFIX)):
        continue
      dst = os.path.join(workdir, name, entry)
      if os.path.exists(dst) or (entry.endswith(progress.SUFFIX) and os.path.exists(dst[:-len(progress.SUFFIX)])):
        continue
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      (shutil.copytree if os.path.isdir(os.path.join(src, entry)) else shutil.copy2)(os.path.join(src, entry), dst)
      copied.append(os.path.join(name, entry))
  logging.info("depth series: seeded %s from %s: %s", workdir, source, copied or "nothing missing")
  return copied


def network_names(config) -> list[str]:
  """The networks in the order they run and are tabled: config.order first, then the rest of config.networks."""
  order = list(config.get("order") or [])
  return order + [n for n in config.networks if n not in order]


def table_folders(config, workdir: str) -> dict[str, str]:
  """name -> folder of every network the table and figure show: the swept ones in `workdir`, in their order,
  then each of `config.joined` (swept by another experiment) whose folder holds a single-deletion sweep."""
  folders = {name: os.path.join(workdir, name) for name in network_names(config)}
  for name, folder in (config.get("joined") or {}).items():
    if any(f.startswith("single_") and f.endswith(".json") for f in
           (os.listdir(folder) if os.path.isdir(folder) else [])):
      folders[name] = folder
  return folders


def run(config, workdir: str, data: dict | None = None) -> list[str]:
  """Every sweep and path analysis of every network, cheapest networks first; returns what ran."""
  check_config(config)
  data = data or data_lib.load_cifar10("folder", config.data_folder or None)
  done = []
  names = network_names(config)
  for name in names:
    path = config.networks[name]
    loaded = checkpoints.load_trained(path)
    for bn in config.bns:
      for sweep in config.get("sweeps", SWEEPS):
        status = sweep_one(config, workdir, data, name, path, sweep, bn, loaded)
        print(f"[depth series] {name}: {sweep} ({bn} BN): {status}", flush=True)
        if status != "kept":
          done.append(f"{name}/{sweep}_{bn}")
    if not config.get("with_paths", True):
      continue
    status = paths_one(config, workdir, data, name, path, loaded)
    print(f"[depth series] {name}: paths: {status}", flush=True)
    if status != "kept":
      done.append(f"{name}/paths")
  logging.info("depth series: ran %s", done)
  return done
