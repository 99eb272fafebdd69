r"""What stale BatchNorm statistics explain, for any folders of paired sweeps (a stored sweep and its recalibrated
twin), in absolute errors against the deployed network: the table results/README.md shows for the CPU study.

  python -m experiments.stale_table --sweep=ResNet=results/repro/lesion/resnet \
      --sweep="stochastic depth=results/repro/lesion/sd" --bn=recalibrate --out=runs/stale.json

--out also writes every lesion's pair (stored error, recalibrated error, cost over the deployed network, the change
recalibration makes) beside each group's means.
"""
import json
import os

from absl import app, flags

from resnet_ensembles.lesion.summary import RECAL_SCOPES
from resnet_ensembles.study import series, series_table, stale_stats
from resnet_ensembles.utils.logs import one_line_errors, parse_flags

_SWEEPS = flags.DEFINE_multi_string("sweep", None, "label=folder: a folder holding single_stored.json and "
                                    "single_<bn>.json (and, for the k columns, multi_stored/multi_<bn>.json).")
_BN = flags.DEFINE_enum("bn", "recalibrate", list(RECAL_SCOPES), "The recalibrated twin to pair with the stored sweeps.")
_OUT = flags.DEFINE_string("out", None, "Optional JSON of the groups and every lesion's pair.")
flags.mark_flags_as_required(["sweep"])


@one_line_errors
def main(argv):
  del argv
  folders = stale_stats.parse_folders(_SWEEPS.value)
  summary = stale_stats.folders_summary(series.load_json, folders, _BN.value)
  table = series_table.stale_table(summary, {}, _BN.value)
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump({"bn": _BN.value, "folders": folders, **summary, "table": table}, f, indent=1)
  print("\n".join(table))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
