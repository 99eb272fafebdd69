r"""Trains a CIFAR-10 network; rerunning the same command resumes from the last checkpoint.

  python -m experiments.train --config=experiments/configs/cifar10.py:resnet20,quick --workdir=runs/quick
"""
from absl import app, flags
from ml_collections import config_flags

from resnet_ensembles import train
from resnet_ensembles.logs import one_line_errors, setup_logging

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and TensorBoard events go here.")
flags.mark_flags_as_required(["config", "workdir"])


@one_line_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  setup_logging()
  result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(f"final test error: {100 * result['test_error']:.2f}% after {result['step']} steps "
        f"({result.get('epoch', 0):.2f} epochs) — workdir {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main)
