r"""Exports a finished training run for committing: parameters + BatchNorm statistics, config, curves.

  python -m experiments.export_run --workdir=runs/r32 --out_dir=results/<name>

Writes variables.msgpack (loadable with `checkpoints.load_trained(out_dir)`), config.json (with the
git commit, epochs, final test error and total training wall time), metrics.jsonl and curves.png.
"""
import json
import os
import platform
import shutil

from absl import app, flags

from resnet_ensembles.store import checkpoints
from resnet_ensembles.training import metrics
from resnet_ensembles.utils import provenance
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging
from resnet_ensembles.plots.training import plot_training_curves, run_title
from resnet_ensembles.utils.provenance import git_commit

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_OUT = flags.DEFINE_string("out_dir", None, "Folder to write (e.g. results/<name>).")
_DATA = flags.DEFINE_string("data_description", None, "What the run trained on, where the workdir has no "
                            "data.json (runs started before it was written).")
_MACHINE = flags.DEFINE_string("machine", None, "Where the run trained, if not on this machine (e.g. a GPU).")
flags.mark_flags_as_required(["workdir", "out_dir"])


def data_description(workdir: str) -> str:
  path = os.path.join(workdir, "data.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)["description"]
  if not _DATA.value:
    raise app.UsageError(f"{workdir} has no data.json: pass --data_description")
  return _DATA.value


@one_line_errors
def main(argv):
  del argv
  setup_logging()
  model, variables, config = checkpoints.load_trained(_WORKDIR.value)
  rows = metrics.read_metrics(_WORKDIR.value)
  evals = [r for r in rows if "eval/test_error" in r]
  if not evals:
    raise app.UsageError(f"{_WORKDIR.value} has no evaluation yet")
  last = evals[-1]
  steps_per_epoch = round(last["step"] / last["eval/epoch"])
  extra = {"export": {"commit": git_commit(), "epochs": last["eval/epoch"], "step": last["step"],
                      "test_error": last["eval/test_error"],
                      "train_wall_s": max(r.get("train/wall_s", 0.0) for r in rows),
                      "machine": _MACHINE.value or f"{platform.machine()}, {os.cpu_count()} CPU cores",
                      "data": data_description(_WORKDIR.value),
                      "train_starts": provenance.read_starts(_WORKDIR.value)}}
  data = extra["export"]["data"]
  if config.get("init_from"):  # a fine-tune: name what it started from (and carry a source's licence along)
    start = checkpoints.read_config(config.init_from).to_dict()
    extra["export"]["started_from"] = {"folder": config.init_from, "commit": start.get("export", {}).get("commit"),
                                       "imported_from": start.get("imported_from")}
    if os.path.exists(os.path.join(config.init_from, "LICENSE")):
      os.makedirs(_OUT.value, exist_ok=True)
      shutil.copyfile(os.path.join(config.init_from, "LICENSE"), os.path.join(_OUT.value, "LICENSE"))
  checkpoints.export_variables(variables, config, _OUT.value, extra)
  shutil.copy(os.path.join(_WORKDIR.value, "metrics.jsonl"), os.path.join(_OUT.value, "metrics.jsonl"))
  plot_training_curves(rows, steps_per_epoch, run_title(config, data), os.path.join(_OUT.value, "curves.png"))
  print(f"exported {_OUT.value}: test error {100 * last['eval/test_error']:.2f}% after {last['eval/epoch']:.0f} epochs")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
