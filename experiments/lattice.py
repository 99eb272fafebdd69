r"""The complete lesion lattice of each configured network, exact Shapley values, interactions, additivity and
the cheap pruning scores beside them; JSON per network, then tables and figures in --out_dir.

  python -m experiments.lattice --config=experiments/configs/lattice.py:cpu --out_dir=results/lattice
  python -m experiments.lattice --config=experiments/configs/lattice.py:cpu --out_dir=results/lattice --only=resnet20

Stop it any time and rerun the same command: finished networks are read back, an interrupted lattice continues
from its finished sub-tries. One process per --out_dir.
"""
from absl import app, flags
from ml_collections import config_flags

from resnet_ensembles.study import lattice_run
from resnet_ensembles.store import lock
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/configs/lattice.py:<cpu|tiny>.")
_OUT = flags.DEFINE_string("out_dir", None, "Where the JSON, tables and figures go.")
_ONLY = flags.DEFINE_list("only", [], "Networks to study now (default: every configured one, in config.order).")
flags.mark_flags_as_required(["config", "out_dir"])


@one_line_errors
def main(argv):
  del argv
  setup_logging()
  config = _CONFIG.value
  names = lattice_run.check(config, _ONLY.value)  # a bad network name or folder fails before anything compiles
  with lock.hold(_OUT.value, hint="use another --out_dir"):
    lattice_run.run(config, names, _OUT.value)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
