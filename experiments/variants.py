r"""Fig. 8: single- and k-deletion error of normally trained vs stochastic-depth vs short-path networks.

  python -m experiments.variants --runs=normal=runs/r32/lesion,sd=runs/r32_sd/lesion,short=runs/r32_sp/lesion \
      --output_dir=results/variants

Each run folder holds `single_<bn>.json` and `multi_<bn>.json` from experiments/lesion.py. Writes
variants.json (the summary table: full error, mean single-deletion error, error at k = 1, 5, 10, 20)
and variants.png.
"""
import json
import os

from absl import app, flags

from resnet_ensembles.utils.logs import one_line_errors, parse_flags
from resnet_ensembles.plots import variants as variant_plots
from resnet_ensembles.utils.provenance import git_commit

_RUNS = flags.DEFINE_list("runs", None, "label=lesion_output_dir, one per training variant.")
_BN = flags.DEFINE_string("bn", "stored", "Which lesion JSONs to read (stored or recalibrate).")
_OUT = flags.DEFINE_string("output_dir", None, "Where variants.json and variants.png go.")
flags.mark_flags_as_required(["runs", "output_dir"])


def read_variants(runs: list[str], bn: str) -> dict:
  variants = {}
  for item in runs:
    label, sep, folder = item.partition("=")
    if not sep:
      raise ValueError(f"--runs items look like label=folder, got {item!r}")
    pair = []
    for sweep in ("single", "multi"):
      path = os.path.join(folder, f"{sweep}_{bn}.json")
      if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing: run experiments.lesion --sweep={sweep} --bn={bn} first")
      with open(path) as f:
        pair.append(json.load(f))
    variants[label] = tuple(pair)
  return variants


@one_line_errors
def main(argv):
  del argv
  variants = read_variants(_RUNS.value, _BN.value)
  os.makedirs(_OUT.value, exist_ok=True)
  table = {label: variant_plots.summarize(*pair) for label, pair in variants.items()}
  with open(os.path.join(_OUT.value, "variants.json"), "w") as f:
    json.dump({"bn": _BN.value, "runs": _RUNS.value, "git_commit": git_commit(), "summary": table}, f, indent=2)
  variant_plots.save(variants, os.path.join(_OUT.value, "variants.png"))
  for label, row in table.items():
    ks = ", ".join(f"k={k}: {100 * v:.1f}%" for k, v in row["k_mean_error"].items())
    print(f"{label}: full {100 * row['full_error']:.2f}%, single deletion {100 * row['single_mean_error']:.2f}%, {ks}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
