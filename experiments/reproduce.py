r"""The whole Veit et al. study in one command (the work: `resnet_ensembles.reproduction`).

  python -m experiments.reproduce --config=experiments/configs/reproduce.py:cpu --workdir=runs/repro

Stages train -> lesion sweeps -> paths -> figures -> report; each is skipped when its outputs exist for the
same config, so a rerun after a kill continues where it stopped. SIGTERM during training checkpoints the
run and exits with status 143 (rerun the command to resume). `--only_runs=short,short_fwd` trains and sweeps
just those runs (e.g. on a GPU); copy their train/<run> and lesion/<run> folders into the main workdir.
`--start_from=results/repro` seeds a new workdir with a finished study (networks, sweeps, figures): the
stages then keep what is still valid here and redo only what this machine's data or code changes.
"""
import os
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

from resnet_ensembles.parallel import distributed
from resnet_ensembles.store import lock
from resnet_ensembles.study import reproduction
from resnet_ensembles.utils.logs import one_line_errors, parse_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "reproduce.py"),
    "Reproduce config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where every stage writes.")
_ONLY = flags.DEFINE_list("only_runs", [], "Train only these runs (of resnet, plain, sd, short, short_fwd) and "
                          "sweep them, marking no stage done: part of a study done on another machine.")
_START_FROM = flags.DEFINE_string("start_from", None, "A finished (or partial) study folder to copy into "
                                  "--workdir when the workdir does not exist yet; ignored when it does.")
flags.mark_flags_as_required(["workdir"])
distributed.define_flags()


@one_line_errors
def main(argv):
  distributed.start_main(argv)
  try:
    with lock.hold(_WORKDIR.value):  # around the seeding too: two mains never copy into one workdir
      if _START_FROM.value:
        reproduction.seed_workdir(_START_FROM.value, _WORKDIR.value)
      if _ONLY.value:
        reproduction.run_part(_CONFIG.value, _WORKDIR.value, _ONLY.value)
      else:
        reproduction.run(_CONFIG.value, _WORKDIR.value)
  except reproduction.Preempted as e:
    print(f"stopped: {e}", flush=True)
    sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
