r"""The depth series: the paper's lesion and path study on networks of several depths, then its table and figure.

  python -m experiments.depth_series --config=experiments/configs/depth_series.py:cpu --workdir=runs/depth_series

Every sweep writes its JSON as it finishes and is kept on a rerun (same network, same settings), so a killed
run continues where it stopped; `--summary_only` redraws the table (series.md, series.json) and figure
(series.png) from whatever is finished. `--start_from=results/depth_series` first copies the committed sweeps
and chunks that the workdir lacks (a new machine continues where the last one's snapshot stopped).
"""
import os

from absl import app, flags
from ml_collections import config_flags

from resnet_ensembles.plots import depth_series as series_plot
from resnet_ensembles.store import lock
from resnet_ensembles.study import depth_series, series, series_table, stages
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "depth_series.py"),
    "Depth-series config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the sweeps and the summary go.")
_START_FROM = flags.DEFINE_string(
    "start_from", None, "A depth-series folder (e.g. results/depth_series) whose finished sweeps and kept chunks "
    "are copied into --workdir where it lacks them, so a machine that lost its workdir continues from there.")
_SUMMARY_ONLY = flags.DEFINE_bool("summary_only", False, "Only redraw the table and figure from finished sweeps.")
flags.mark_flags_as_required(["workdir"])


@one_line_errors
def main(argv):
  del argv
  setup_logging()
  c, workdir = _CONFIG.value, _WORKDIR.value
  if _START_FROM.value:  # before the lock creates the workdir
    depth_series.check_start_from(_START_FROM.value)
  with lock.hold(workdir):  # one process per workdir
    if _START_FROM.value:
      depth_series.seed_workdir(_START_FROM.value, workdir, list(c.networks))
    summarize(c, workdir, run_first=not _SUMMARY_ONLY.value)


def summarize(c, workdir: str, run_first: bool) -> None:
  if run_first:
    depth_series.run(c, workdir)
  folders = depth_series.table_folders(c, workdir)  # the swept networks, then joined ones that exist
  summary = series.summarize(workdir, list(folders), list(c.fit_networks), list(c.bns), folders)
  stages.write_json(summary, os.path.join(workdir, "series.json"))
  labels = c.labels.to_dict()
  with open(os.path.join(workdir, "series.md"), "w") as f:
    f.write(series_table.render(summary, labels))
  series_plot.save(summary, labels, os.path.join(workdir, "series.png"))
  print(f"depth series: {os.path.join(workdir, 'series.md')}, series.png, series.json")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
