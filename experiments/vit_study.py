r"""The ViT study: every sweep of the ViT (kept on a rerun, resumable), then the comparison with a ResNet.

  python -m experiments.vit_study --config=experiments/configs/vit_study.py:cpu --workdir=runs/vit_study

Writes <workdir>/vit/*.json (the sweeps, schema of experiments/lesion.py) and <workdir>/comparison.{md,json,png};
`--summary_only` redraws the comparison from whatever is finished.
"""
import os

from absl import app, flags
from ml_collections import config_flags

from resnet_ensembles.plots import vit_comparison as comparison_plot
from resnet_ensembles.store import lock
from resnet_ensembles.study import depth_series, stages, vit_comparison
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "vit_study.py"),
    "ViT study config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the sweeps and the comparison go.")
_SUMMARY_ONLY = flags.DEFINE_bool("summary_only", False, "Only redraw the comparison from finished sweeps.")
flags.mark_flags_as_required(["workdir"])


@one_line_errors
def main(argv):
  del argv
  setup_logging()
  c, workdir = _CONFIG.value, _WORKDIR.value
  if not os.path.isdir(c.compare_with):
    raise FileNotFoundError(f"vit study: compare_with {c.compare_with} is not a folder of ResNet sweeps "
                            f"(run experiments/depth_series.py first, or set --config.compare_with)")
  with lock.hold(workdir):
    if not _SUMMARY_ONLY.value:
      depth_series.run(c, workdir)
    write_comparison(c, workdir)


def write_comparison(c, workdir: str) -> None:
  (name,) = list(c.networks) or ["vit"]
  summary = vit_comparison.summarize(os.path.join(workdir, name), c.compare_with)
  summary["compare_with"] = c.compare_with
  labels = vit_comparison.labels(c.labels.to_dict(), name, c.compare_with)
  stages.write_json(summary, os.path.join(workdir, "comparison.json"))
  with open(os.path.join(workdir, "comparison.md"), "w") as f:
    f.write(vit_comparison.render(summary, labels))
  comparison_plot.save(summary, labels, os.path.join(workdir, "comparison.png"))
  print(f"vit study: {os.path.join(workdir, 'comparison.md')}, comparison.png, comparison.json")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
