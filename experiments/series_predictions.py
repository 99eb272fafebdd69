r"""The depth series' predictions at the paper's n = 54 and, once measured, a network against them.

  python -m experiments.series_predictions --out=results/resnet110_cpu/predictions --bns=stored
  python -m experiments.series_predictions --out=results/resnet110_cpu/predictions \
      --measured=results/resnet110_cpu/depth_series/own_resnet110

Reads the series' summary (--series, `experiments.depth_series` writes it), predicts every effect at n = 54 from
the imported networks' fits (with leave-one-out spread and a 90% prediction interval) and from the same fits
moved through --anchor (a network trained with the measured network's recipe at a smaller depth), and writes
predictions.json and predictions.md into --out. predictions.json is written once: a rerun keeps the committed
predictions and only fills in the measured column, adding the effects not predicted yet (a BatchNorm treatment
or sweep that came later) with the commit that predicted them (--refit writes them anew).
"""
import json
import os

from absl import app, flags

from resnet_ensembles.study import predictions, series
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging
from resnet_ensembles.utils.provenance import git_commit

_SERIES = flags.DEFINE_string("series", "results/depth_series/series.json", "The depth series' summary.")
_ANCHOR = flags.DEFINE_string("anchor", "own_resnet32", "The series network of the measured network's recipe.")
_MEASURED = flags.DEFINE_string("measured", "", "A folder of the measured network's sweeps and paths.json.")
_NAME = flags.DEFINE_string("name", "ResNet-110 (own, pre-act, 40 epochs)", "The measured network, for the table.")
_OUT = flags.DEFINE_string("out", None, "Where predictions.json and predictions.md go.")
_BNS = flags.DEFINE_list("bns", ["stored", "recalibrate"], "BatchNorm treatments.")
_REFIT = flags.DEFINE_bool("refit", False, "Predict anew even where predictions.json exists.")
flags.mark_flags_as_required(["out"])


def _predicted(entry) -> bool:
  """An effect with a value at n = 54 (a fit needs three networks swept; before that it is a placeholder)."""
  return isinstance(entry, dict) and entry.get("at_54") is not None


@one_line_errors
def main(argv):
  del argv
  setup_logging()
  if not os.path.exists(_SERIES.value):
    raise FileNotFoundError(f"--series {_SERIES.value} does not exist (python -m experiments.depth_series writes it)")
  with open(_SERIES.value) as f:
    summary = json.load(f)
  if _ANCHOR.value not in summary["networks"]:
    raise ValueError(f"--anchor {_ANCHOR.value!r} is not a network of {_SERIES.value}: {sorted(summary['networks'])}")
  path = os.path.join(_OUT.value, "predictions.json")
  made = None
  if os.path.exists(path) and not _REFIT.value:
    with open(path) as f:
      made = json.load(f)
  # an effect predicted before stays as it was (it may have been committed before the measurement); one not
  # predicted yet (a treatment or sweep that came later) is added, with the commit that predicted it
  if made is None:
    made = {"series": {}, "anchored": {}, "anchor": _ANCHOR.value, "fit_networks": summary["fit_networks"],
            "git_commit": git_commit()}
  if made["fit_networks"] != summary["fit_networks"] or made["anchor"] != _ANCHOR.value:
    raise ValueError(f"{path} was predicted from {made['fit_networks']} anchored on {made['anchor']}; add "
                     f"predictions from the same networks, or --refit")
  fits = predictions.predict(summary, summary["fit_networks"], _BNS.value)
  added = {}
  for bn in _BNS.value:
    moved = predictions.anchored(fits, summary["networks"][_ANCHOR.value][bn], bn)
    for key, new in (("series", fits[bn]), ("anchored", moved)):
      have = made[key].setdefault(bn, {})
      for effect, value in new.items():
        if not _predicted(have.get(effect)):
          have[effect] = value
          if _predicted(value):
            added.setdefault(bn, set()).add(effect)
  if added or not os.path.exists(path):
    by, commit = made.setdefault("predicted_by_commit", {}), git_commit()
    for bn, effects in added.items():
      by.setdefault(bn, {}).update({e: commit for e in sorted(effects)})
    os.makedirs(_OUT.value, exist_ok=True)
    with open(path, "w") as f:
      json.dump(made, f, indent=1)
  text = [f"# {_NAME.value}: the depth series' predictions at n = 54 against the measurement\n",
          "Written by `python -m experiments.series_predictions` (its docstring says how). Costs in points of test error "
          "on CIFAR-10 (JPEG q75 copy).\n"]
  for bn in made["series"]:
    measured = series.network_summary(_MEASURED.value, bn) if _MEASURED.value else {}
    text.append(f"\n## {bn} BatchNorm statistics: from the imported networks ({', '.join(made['fit_networks'])})\n")
    text.append(predictions.render(predictions.compare(made["series"], measured, bn), bn, _NAME.value))
    text.append(f"\n## {bn}: the same exponents through {made['anchor']} (the measured network's recipe)\n")
    text.append(predictions.render(predictions.compare(made["anchored"], measured, bn), bn, _NAME.value))
  with open(os.path.join(_OUT.value, "predictions.md"), "w") as f:
    f.write("".join(text))
  print(f"wrote {_OUT.value}/predictions.json, predictions.md")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
