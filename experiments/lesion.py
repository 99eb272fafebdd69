r"""Lesion study of a trained network (Veit et al. Figs. 3, 5a, 5b): JSON + CSV of every lesion, then a PNG.

  python -m experiments.lesion --workdir=runs/r110 --plain_workdir=runs/p110 --sweep=single
  python -m experiments.lesion --workdir=runs/r110 --sweep=multi --num_samples=10 [--bn=recalibrate]
  python -m experiments.lesion --workdir=runs/r110 --sweep=reorder

On several hosts run the same command on every host (docs/parallel.md); process 0 writes.
Each network's full (unlesioned) error is evaluated in the same run, under the same BatchNorm mode.
The figure is drawn from the JSON (resnet_ensembles/plots/lesion.py), with the paper's ResNet-110 values
(resnet_ensembles/paper_numbers.json) overlaid in a dashed grey style.
"""
import csv
import json
import os

from absl import app, flags

from resnet_ensembles.store import checkpoints, lock
from resnet_ensembles.parallel import distributed
from resnet_ensembles import models
from resnet_ensembles.lesion import sweep as lesion
from resnet_ensembles.lesion import study as lesion_study
from resnet_ensembles.lesion import masks
from resnet_ensembles.lesion import progress
from resnet_ensembles.data import for_run as study_data
from resnet_ensembles.utils.logs import one_line_errors, parse_flags
from resnet_ensembles.plots import lesion as lesion_plots
from resnet_ensembles.utils.provenance import git_commit

SWEEPS = ("single", "multi", "reorder")
_WORKDIR = flags.DEFINE_string("workdir", None, "Trained ResNet: a training workdir or an exported folder.")
_PLAIN = flags.DEFINE_string("plain_workdir", None, "Optional trained plain net, swept the same way.")
_LABEL = flags.DEFINE_string("label", "ResNet", "Name of the --workdir network in the JSON and figure "
                             "(e.g. 'stochastic depth').")
_SWEEP = flags.DEFINE_enum("sweep", None, SWEEPS, "single: each block deleted; multi: k random deletions; "
                           "reorder: k random within-stage swaps.")
_BN = flags.DEFINE_enum("bn", "stored", lesion.BN_MODES, "BatchNorm statistics: stored; recalibrate (re-estimated per lesion from its first changed position on, "
                          "the intact network as deployed); recalibrate_all (every statistic re-estimated).")
_OUT = flags.DEFINE_string("output_dir", None, "Default: <workdir>/lesion.")
_SAMPLES = flags.DEFINE_integer("num_samples", 10, "multi/reorder: random lesions per k.")
_MAX_K = flags.DEFINE_integer("max_k", masks.PAPER_MAX_K, "multi/reorder: k = 1..max_k (capped by the blocks).")
_OPENERS = flags.DEFINE_bool("include_openers", False, "multi: also delete stage openers.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the mask/order generators and the recalibration batches.")
_TEST_SIZE = flags.DEFINE_integer("test_size", -1, "Test images (0: all; -1: as the training config).")
_BATCH = flags.DEFINE_integer("batch_size", 500, "Test images per batch.")
_BUDGET = flags.DEFINE_integer("memory_budget_mb", lesion.DEFAULT_BUDGET >> 20, "Activation memory per chunk.")
_RECAL_BATCHES = flags.DEFINE_integer("recal_batches", 4, "bn=recalibrate: training batches per lesion.")
_RECAL_BS = flags.DEFINE_integer("recal_batch_size", 128, "bn=recalibrate: images per training batch.")
flags.mark_flags_as_required(["workdir", "sweep"])
distributed.define_flags()



def write_csv(result: dict, path: str) -> None:
  keys = ["network", "index", "deleted", "stage", "k", "swaps", "kendall_tau", "order", "error", "top5_error"]
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(keys)
    for net in result["networks"]:
      w.writerow([net["label"], "full"] + [""] * 6 + [net["full_error"], ""])
      for i, row in enumerate(net["rows"]):
        cell = lambda k: " ".join(map(str, row[k])) if isinstance(row.get(k), list) else row.get(k, "")
        w.writerow([net["label"], i] + [cell(k) for k in keys[2:]])


@one_line_errors
def main(argv):
  distributed.start_main(argv)
  lesion_study.check_sweep_args(_SWEEP.value, num_samples=_SAMPLES.value, max_k=_MAX_K.value,
                                batch_size=_BATCH.value, memory_budget_mb=_BUDGET.value,
                                recal_batches=_RECAL_BATCHES.value, recal_batch_size=_RECAL_BS.value)
  config = checkpoints.read_config(_WORKDIR.value)  # a wrong --workdir fails before anything is created
  if _BN.value in lesion.RECAL_MODES:  # before any data is read: a ViT has no BatchNorm to recalibrate
    models.require_batch_norm(models.from_config(config), f"--bn={_BN.value}")
  out_dir = _OUT.value or os.path.join(_WORKDIR.value, "lesion")
  with lock.hold(out_dir, hint="use another --output_dir"):  # before the sweep: a second one fails at once
    run_and_write(config, out_dir)


def run_and_write(config, out_dir: str) -> None:
  recal_images = _RECAL_BATCHES.value * _RECAL_BS.value if _BN.value in lesion.RECAL_MODES else 0
  data = study_data.load_for_study(config, test_size=None if _TEST_SIZE.value < 0 else _TEST_SIZE.value,
                         train_size=recal_images, seed=_SEED.value)
  out_dir = _OUT.value or os.path.join(_WORKDIR.value, "lesion")
  stem = os.path.join(out_dir, f"{_SWEEP.value}_{_BN.value}")
  # finished chunks go to <stem>.json.partial/<label>/ as they finish: a rerun after a kill continues there
  sweep = lambda path, label: lesion_study.sweep_network(
      path, label, data, _SWEEP.value, bn=_BN.value, num_samples=_SAMPLES.value, max_k=_MAX_K.value,
      seed=_SEED.value, include_openers=_OPENERS.value, batch_size=_BATCH.value,
      memory_budget_mb=_BUDGET.value, recal_batches=_RECAL_BATCHES.value, recal_batch_size=_RECAL_BS.value,
      resume_dir=progress.partial_dir(stem + ".json", label))
  networks = [sweep(_WORKDIR.value, _LABEL.value)]
  if _PLAIN.value:
    networks.append(sweep(_PLAIN.value, "plain"))
  result = {"sweep": _SWEEP.value, "bn": _BN.value, "git_commit": git_commit(),
            "flags": {f.name: f.value for f in flags.FLAGS.get_key_flags_for_module(__name__)},
            "test_images": int(len(data["test"][1])), "networks": networks}
  if not distributed.is_main_process():
    return
  os.makedirs(out_dir, exist_ok=True)
  with open(stem + ".json.tmp", "w") as f:
    json.dump(result, f, indent=1)
  os.replace(stem + ".json.tmp", stem + ".json")
  progress.discard(stem + ".json")
  write_csv(result, stem + ".csv")
  with open(stem + ".json") as f:  # the figure is a function of the JSON (and the paper's numbers)
    saved = json.load(f)
  lesion_plots.save(saved, stem + ".png", paper=lesion_plots.paper_overlay(saved))
  for net in networks:
    errs = [r["error"] for r in net["rows"]]
    print(f"{net['label']}: full error {100 * net['full_error']:.2f}%, lesions {100 * min(errs):.2f}-"
          f"{100 * max(errs):.2f}% over {len(errs)} {_SWEEP.value} lesions")
  print(f"wrote {stem}.json, .csv, .png")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
