r"""Packs a CIFAR-10 image folder (<folder>/<split>/<class>/*.jpg) into one compressed file.

  python -m experiments.pack_cifar10 --folder=$CIFAR10_DIR --out=runs/cifar10-jpeg.cifarpack \
      --description="CIFAR-10 (JPEG q75 copy)"

The pack is read wherever the folder is (config.data.folder or CIFAR10_DIR naming the file), decoded
to the same arrays; the format is described in resnet_ensembles/data/pack.py.
"""
import time

from absl import app, flags

from resnet_ensembles.data import for_run, pack as cifar_pack
from resnet_ensembles.utils.logs import one_line_errors, parse_flags

_FOLDER = flags.DEFINE_string("folder", None, "Root with train/ and test/, each with the 10 class folders.")
_OUT = flags.DEFINE_string("out", None, f"Pack file to write (by convention ending in {cifar_pack.SUFFIX}).")
_DESC = flags.DEFINE_string("description", None, "What the data is, e.g. 'CIFAR-10 (JPEG q75 copy)'. Default: "
                            f"'description' of <folder>/{cifar_pack.METADATA_FILE}, else a known copy's name, else the folder's path.")
flags.mark_flags_as_required(["folder", "out"])


@one_line_errors
def main(argv):
  del argv
  start = time.perf_counter()
  description = _DESC.value or for_run.describe_folder(_FOLDER.value)  # dataset.json, a known copy, or the path
  info = cifar_pack.pack_folder(_FOLDER.value, _OUT.value, description=description)
  wall = time.perf_counter() - start
  raw = sum(s["raw_size"] for s in info["splits"].values())
  counts = ", ".join(f"{k}: {s['num_images']}" for k, s in info["splits"].items())
  print(f"wrote {_OUT.value}: {info['file_size'] / 1e6:.2f} MB from {raw / 1e6:.2f} MB of image files "
        f"({counts}; ratio {raw / info['file_size']:.2f}) in {wall:.1f} s; {info['description']!r}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
