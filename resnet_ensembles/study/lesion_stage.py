"""The lesion stages of the staged reproduction: one sweep JSON per run, kept when it already holds these
networks under these settings (so a stage of several runs, or a chain piece, continues after a kill)."""
from __future__ import annotations

import inspect
import os
from typing import Callable

from resnet_ensembles.lesion import progress as lesion_progress
from resnet_ensembles.lesion import study as lesion_study
from resnet_ensembles.parallel import distributed
from resnet_ensembles.store import checkpoints
from resnet_ensembles.study.stages import LABELS, SWEEP_RUNS, DataCache, read_json, train_config, write_json
from resnet_ensembles.utils.provenance import git_commit


def _lesion_args(lc) -> dict:
  return dict(bn=lc.bn, num_samples=lc.num_samples, max_k=lc.max_k, seed=lc.seed, batch_size=lc.batch_size,
              memory_budget_mb=lc.memory_budget_mb, recal_batches=lc.recal_batches,
              recal_batch_size=lc.recal_batch_size)


RESULT_FLAGS = ("bn", "num_samples", "max_k", "seed")  # what a sweep's numbers depend on (not its chunking)
RECAL_FLAGS = ("recal_batches", "recal_batch_size")    # ... and, with bn=recalibrate, its recalibration
# lesion_study's defaults: a sweep JSON written before the pipeline recorded a flag used these (openers are
# always left out of k-deletions here)
DEFAULT_FLAGS = {name: p.default for name, p in inspect.signature(lesion_study.sweep_network).parameters.items()
                 if name in ("include_openers", *RECAL_FLAGS)}


def kept_sweep(path: str, lc, run_dirs: list[str], test_images: int) -> bool:
  """Whether the sweep JSON at `path` (from an earlier, interrupted attempt at this stage, or from
  experiments/lesion.py with the same settings) already holds these networks (same variables) under the
  settings the numbers depend on: then it stands, and a stage of several runs continues after a kill."""
  if not os.path.exists(path):
    return False
  old = read_json(path)
  flags = old.get("flags", {})
  keys = RESULT_FLAGS + (RECAL_FLAGS if lc.bn.startswith("recalibrate") else ())
  want = {**{k: lc[k] for k in keys}, "include_openers": False}
  got = {k: flags.get(k, DEFAULT_FLAGS.get(k)) for k in want}
  if got != want or old.get("test_images") != test_images:
    return False
  if any(n.get("recalibration") != lesion_study.recalibration(lc.bn) for n in old["networks"]):
    return False  # recalibrated in the other scope (or before the scope was recorded)
  trained = [checkpoints.load_trained(d) for d in run_dirs]
  masks = [t[2].train_mask.to_dict() if "train_mask" in t[2] else None for t in trained]
  if [n.get("train_mask") for n in old["networks"]] != masks:  # e.g. now evaluated with scaled branches
    return False
  fingerprints = [checkpoints.fingerprint(t[1]) for t in trained]
  return [n.get("variables_sha256") for n in old["networks"]] == fingerprints


def lesion_run(config, workdir: str, data: DataCache, sweep: str, run: str) -> None:
  """One run's sweep into workdir/lesion/<run>/<sweep>_<bn>.json (kept if already there for this network)."""
  lc = config.lesion
  d = data(train_config(config, run))
  labels = {os.path.join(workdir, "train", run): LABELS[run]}
  if sweep == "single" and run == "resnet":
    labels[os.path.join(workdir, "train", "plain")] = "plain"
  out = os.path.join(workdir, "lesion", run, f"{sweep}_{lc.bn}.json")
  if kept_sweep(out, lc, list(labels), int(len(d["test"][1]))):
    print(f"  {run}: {sweep} sweep of these networks already in {out}, kept", flush=True)
    if distributed.is_main_process():
      lesion_progress.discard(out)  # killed between writing the JSON and removing its chunks
    return
  # finished chunks of each network's sweep go to <out>.partial/<label>/: a rerun after a kill continues there
  nets = [lesion_study.sweep_network(path, label, d, sweep, resume_dir=lesion_progress.partial_dir(out, label),
                                     **_lesion_args(lc)) for path, label in labels.items()]
  write_sweep(lc, sweep, nets, int(len(d["test"][1])), out, run)


def sweep_network(config, workdir: str, data: DataCache, sweep: str, run: str, out: str) -> dict:
  """One network's entry of the sweep JSON `out` (`lesion_run` writes a list of them), resuming from its
  finished chunks: for a caller that sweeps the networks of one JSON at different times
  (experiments/paper_chain.py: the ResNet, then the plain net)."""
  d = data(train_config(config, run))
  return lesion_study.sweep_network(os.path.join(workdir, "train", run), LABELS[run], d, sweep,
                                    resume_dir=lesion_progress.partial_dir(out, LABELS[run]),
                                    **_lesion_args(config.lesion))


def write_sweep(lc, sweep: str, nets: list[dict], test_images: int, out: str, run: str) -> None:
  """The sweep JSON of `lesion_run` from its networks' entries (then its finished chunks go), and one summary
  line per network."""
  result = {"sweep": sweep, "bn": lc.bn, "git_commit": git_commit(), "flags": lc.to_dict(),
            "test_images": test_images, "networks": nets}
  write_json(result, out)
  if distributed.is_main_process():
    lesion_progress.discard(out)
  for net in nets:
    errs = [r["error"] for r in net["rows"]]
    print(f"  {run}/{net['label']}: full {100 * net['full_error']:.2f}%, {len(errs)} {sweep} lesions "
          f"{100 * min(errs):.2f}-{100 * max(errs):.2f}%", flush=True)


def stage_lesion(sweep: str) -> Callable:
  def run_stage(config, workdir: str, data: DataCache) -> None:
    for run in SWEEP_RUNS[sweep]:
      lesion_run(config, workdir, data, sweep, run)
  return run_stage
