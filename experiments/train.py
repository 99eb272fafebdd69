r"""Trains a CIFAR-10 (or ImageNet) network; rerunning the same command resumes from the last checkpoint.

  python -m experiments.train --config=experiments/configs/cifar10.py:resnet20,quick --workdir=runs/quick
  python -m experiments.train --config=experiments/configs/imagenet.py:resnet50 --workdir=runs/r50

On several hosts run the same command on every host (docs/parallel.md): jax.distributed is
initialized from --coordinator_address/--num_processes/--process_id, else auto-detected (TPU pod, SLURM).
"""
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

from resnet_ensembles.parallel import distributed
from resnet_ensembles import training as train
from resnet_ensembles.utils.logs import one_line_errors, parse_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and TensorBoard events go here.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


@one_line_errors
def main(argv):
  distributed.start_main(argv, _CONFIG.value)
  result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if result.get("preempted"):
    if distributed.is_main_process():
      print(f"stopped by SIGTERM at step {result['step']} (checkpointed); rerun the same command to resume")
    sys.exit(128 + signal.SIGTERM)  # the conventional status of a job ended by SIGTERM
  if distributed.is_main_process():
    print(f"final test error: {100 * result['test_error']:.2f}% after {result['step']} steps "
          f"({result.get('epoch', 0):.2f} epochs) — workdir {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
