r"""Imports a PyTorch CIFAR ResNet checkpoint (akamaster layout) without torch, for committing.

  python -m experiments.import_torch \
      --checkpoint=../shared/data/pretrained/akamaster-cifar10/resnet20-12fca82f.th \
      --out_dir=results/depth_series/imported/resnet20

Writes variables.msgpack + config.json (loadable with `checkpoints.load_trained(out_dir)`; the config's
`imported_from` names the source file, its sha256, format and licence) and copies the LICENSE beside it.
"""
from absl import app, flags

from experiments.configs import cifar10
from resnet_ensembles.store import torch_import
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A torch.save file (legacy or zip format).")
_OUT = flags.DEFINE_string("out_dir", None, "Folder to write.")
_DEPTH = flags.DEFINE_integer("depth", None, "Expected depth (6n+2); inferred from the keys when unset.")
_LICENCE = flags.DEFINE_string("licence", None, "The source's licence in words (e.g. 'BSD 2-clause'), recorded "
                               "with the first line of the LICENSE file found beside the checkpoint.")
flags.mark_flags_as_required(["checkpoint", "out_dir"])


def import_config(depth: int):
  """The repository's config for the network, with akamaster's own training schedule (200 epochs)."""
  config = cifar10.get_config(f"resnet{depth}_original")
  config.model.shortcut_pad, config.model.input_stats = "both", "imagenet"
  config.num_epochs, config.warmup_steps = 200, 0
  return config


@one_line_errors
def main(argv):
  del argv
  setup_logging()
  s = torch_import.import_checkpoint(_CHECKPOINT.value, _OUT.value, import_config, _DEPTH.value,
                                     _LICENCE.value)
  print(f"imported {_CHECKPOINT.value} -> {s['out_dir']}: ResNet-{s['depth']}, {s['blocks']} blocks, "
        f"{s['params']:,} params, sha256 {s['sha256']}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
