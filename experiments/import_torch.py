r"""Imports a PyTorch CIFAR ResNet checkpoint (akamaster layout) without torch, for committing.

  python -m experiments.import_torch \
      --checkpoint=../shared/data/pretrained/akamaster-cifar10/resnet20-12fca82f.th \
      --out_dir=results/depth_series/imported/resnet20

Writes variables.msgpack + config.json (loadable with `checkpoints.load_trained(out_dir)`; the config's
`imported_from` names the source file, its sha256, format and licence) and copies the LICENSE beside it.

  python -m experiments.import_torch --all_akamaster

(re)writes the git-ignored variables.msgpack of every folder of results/depth_series/imported from the
akamaster files in ../shared/data/pretrained/akamaster-cifar10 (--source_dir): the committed config.json and
LICENSE stay as they are (provenance of the first import), and a source file whose sha256 is not the one the
committed config.json records is refused. The variables are byte-identical to the committed ones of before.
"""
import glob
import os
import shutil
import tempfile

from absl import app, flags

from experiments.configs import cifar10
from resnet_ensembles.store import torch_import
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A torch.save file (legacy or zip format).")
_OUT = flags.DEFINE_string("out_dir", None, "Folder to write.")
_DEPTH = flags.DEFINE_integer("depth", None, "Expected depth (6n+2); inferred from the keys when unset.")
_LICENCE = flags.DEFINE_string("licence", None, "The source's licence in words (e.g. 'BSD 2-clause'), recorded "
                               "with the first line of the LICENSE file found beside the checkpoint.")
_ALL = flags.DEFINE_bool("all_akamaster", False, "Import every akamaster file of --source_dir into its folder of "
                         "--imported_dir (variables.msgpack only where a committed config.json is there).")
_SOURCE = flags.DEFINE_string("source_dir", None, "--all_akamaster: the .th files (default: "
                              "../shared/data/pretrained/akamaster-cifar10 beside the checkout).")
_IMPORTED = flags.DEFINE_string("imported_dir", "results/depth_series/imported", "--all_akamaster: the folders.")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AKAMASTER = os.path.join(os.path.dirname(ROOT), "shared", "data", "pretrained", "akamaster-cifar10")
COMMAND = "python -m experiments.import_torch --all_akamaster"  # named by the hints of a folder without weights


def import_config(depth: int):
  """The repository's config for the network, with akamaster's own training schedule (200 epochs)."""
  config = cifar10.get_config(f"resnet{depth}_original")
  config.model.shortcut_pad, config.model.input_stats = "both", "imagenet"
  config.num_epochs, config.warmup_steps = 200, 0
  return config


def import_all(source_dir: str, imported_dir: str) -> list[str]:
  """Every `resnet<d>-*.th` of source_dir into imported_dir/resnet<d>; returns the folders written."""
  from resnet_ensembles.store import checkpoints
  files = sorted(glob.glob(os.path.join(source_dir, "resnet*.th")))
  if not files:
    raise FileNotFoundError(f"no resnet*.th in {source_dir} (--source_dir)")
  written = []
  for path in files:
    out = os.path.join(imported_dir, os.path.basename(path).split("-")[0])
    with tempfile.TemporaryDirectory() as tmp:
      s = torch_import.import_checkpoint(path, tmp, import_config, None, "BSD 2-clause")
      committed = os.path.join(out, checkpoints.CONFIG_FILE)
      if os.path.exists(committed):  # keep the committed provenance; only the weights are regenerated
        want = checkpoints.read_config(out).imported_from.sha256
        if want != s["sha256"]:
          raise ValueError(f"{path} has sha256 {s['sha256']}, not the {want} that {committed} records")
        shutil.copyfile(os.path.join(tmp, checkpoints.EXPORT_FILE), os.path.join(out, checkpoints.EXPORT_FILE))
      else:
        shutil.copytree(tmp, out)
    print(f"imported {path} -> {out}: ResNet-{s['depth']}, {s['params']:,} params, sha256 {s['sha256'][:12]}...")
    written.append(out)
  return written


@one_line_errors
def main(argv):
  del argv
  setup_logging()
  if _ALL.value:
    import_all(_SOURCE.value or AKAMASTER, _IMPORTED.value)
    return
  if not _CHECKPOINT.value or not _OUT.value:
    raise ValueError("--checkpoint and --out_dir are required (or --all_akamaster)")
  s = torch_import.import_checkpoint(_CHECKPOINT.value, _OUT.value, import_config, _DEPTH.value,
                                     _LICENCE.value)
  print(f"imported {_CHECKPOINT.value} -> {s['out_dir']}: ResNet-{s['depth']}, {s['blocks']} blocks, "
        f"{s['params']:,} params, sha256 {s['sha256']}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
