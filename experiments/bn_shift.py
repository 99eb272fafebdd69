r"""Why re-estimating every BatchNorm statistic shifts the intact network (results/depth_series/bn_shift/).

  python -m experiments.bn_shift --network=results/depth_series/finetuned/resnet56 \
      --out=results/depth_series/bn_shift/resnet56.json --test_images=2000
"""
import json
import os

from absl import app, flags

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion import bn_shift
from resnet_ensembles.store import checkpoints
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging

_NETWORK = flags.DEFINE_string("network", None, "A trained network folder (load_trained reads it).")
_OUT = flags.DEFINE_string("out", None, "The JSON to write.")
_TEST_IMAGES = flags.DEFINE_integer("test_images", 0, "Test images (subset seed 1); 0: all 10,000.")
flags.mark_flags_as_required(["network", "out"])


@one_line_errors
def main(argv):
  del argv
  setup_logging()
  if not os.path.exists(os.path.join(_NETWORK.value, checkpoints.CONFIG_FILE)):
    raise FileNotFoundError(f"--network {_NETWORK.value} is not a trained network folder")
  if _TEST_IMAGES.value < 0:
    raise ValueError(f"--test_images must be >= 0, got {_TEST_IMAGES.value}")
  result = bn_shift.measure(_NETWORK.value, data_lib.load_cifar10("folder"), _TEST_IMAGES.value)
  with open(_OUT.value, "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result["error"], indent=1))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
