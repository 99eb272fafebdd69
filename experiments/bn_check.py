r"""The full network's BatchNorm offset: stored statistics against statistics recalibrated on training images.

  python -m experiments.bn_check --workdir=results/repro/train/resnet --out_dir=results/lesion/bn_check

Writes three JSON files into --out_dir (the numbers of results/lesion/bn_check/README.md):
  full_network.json  test error with the stored statistics, and recalibrated as the lesion sweeps do
                     (`lesion.sweep.evaluate(bn="recalibrate")`) on each of --batches x 128 un-augmented
                     training images, for each of --seeds;
  augmented.json     recalibrated on the same numbers of batches, un-augmented and with the training
                     augmentation (pad-crop + flip), both on the first seed's images;
  compare.json       per layer, recalibrated (--compare_batches augmented batches) against stored statistics;
                     compare.txt is the same as text.
All on every test image.
"""
import json
import os

import jax
import numpy as np
from absl import app, flags

from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.data import for_run as study_data
from resnet_ensembles.lesion import bn_offset
from resnet_ensembles.lesion import sweep as lesion
from resnet_ensembles.store import checkpoints, lock
from resnet_ensembles.utils.logs import one_line_errors, parse_flags
from resnet_ensembles.utils.provenance import git_commit

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained network with BatchNorm: a training workdir or an "
                               "exported folder.")
_OUT = flags.DEFINE_string("out_dir", None, "Where the JSON files go.")
_BATCHES = flags.DEFINE_list("batches", ["4", "16", "64"], "Numbers of training batches to recalibrate on.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the recalibration images (un-augmented runs).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Training images per recalibration batch.")
_COMPARE = flags.DEFINE_integer("compare_batches", 32, "Augmented batches of the per-layer comparison.")
_TEST_SIZE = flags.DEFINE_integer("test_size", 0, "Test images (0: all).")
flags.mark_flags_as_required(["workdir", "out_dir"])


def _positive_ints(name: str, values: list[str], minimum: int) -> list[int]:
  try:
    out = [int(v) for v in values]
  except ValueError:
    raise ValueError(f"--{name} takes integers, got {','.join(values)}") from None
  if not out or min(out) < minimum:
    raise ValueError(f"--{name} takes integers >= {minimum}, got {','.join(values)}")
  return out


def _write(path: str, payload: dict) -> None:
  with open(path, "w") as f:
    json.dump(payload, f, indent=1)


@one_line_errors
def main(argv):
  del argv
  batches = _positive_ints("batches", _BATCHES.value, 1)
  seeds = _positive_ints("seeds", _SEEDS.value, 0)
  if _BATCH_SIZE.value < 1 or _COMPARE.value < 1 or _TEST_SIZE.value < 0:
    raise ValueError("--batch_size and --compare_batches must be >= 1, --test_size >= 0")
  config = checkpoints.read_config(_WORKDIR.value)  # a wrong --workdir fails before anything compiles
  models.require_batch_norm(models.from_config(config), "bn_check")
  with lock.hold(_OUT.value, hint="use another --out_dir"):
    model, variables, config = checkpoints.load_trained(_WORKDIR.value)
    data = study_data.load_for_study(config, test_size=_TEST_SIZE.value)
    full = np.ones((1, model.layout.num_blocks), np.float32)
    error = lambda v, **kw: float(lesion.evaluate(model, v, data["test"], full, **kw)["error"][0])
    meta = {"workdir": _WORKDIR.value, "git_commit": git_commit(), "batch_size": _BATCH_SIZE.value,
            "test_images": int(len(data["test"][1]))}

    out = {"stored": error(variables)}
    print(f"stored statistics: {100 * out['stored']:.2f}%", flush=True)
    for nb in batches:
      for seed in seeds:
        out[f"recal_{nb}x{_BATCH_SIZE.value}_seed{seed}"] = e = error(
            variables, bn="recalibrate", recal_split=data["train"], recal_batches=nb,
            recal_batch_size=_BATCH_SIZE.value, seed=seed)
        print(f"recalibrated on {nb} x {_BATCH_SIZE.value}, seed {seed}: {100 * e:.2f}%", flush=True)
    _write(os.path.join(_OUT.value, "full_network.json"), {**meta, "errors": out})

    key = jax.random.key(seeds[0])
    aug = {}
    for augmented in (False, True):
      for nb in batches:
        images, _ = data_lib.subset(data["train"], nb * _BATCH_SIZE.value, seeds[0])
        stats = bn_offset.full_network_stats(model, variables, images, _BATCH_SIZE.value,
                                             key if augmented else None)
        name = f"{'aug' if augmented else 'plain'}_{nb}x{_BATCH_SIZE.value}"
        aug[name] = e = error({"params": variables["params"], "batch_stats": stats})
        print(f"recalibrated on {nb} x {_BATCH_SIZE.value}, {'augmented' if augmented else 'un-augmented'}: "
              f"{100 * e:.2f}%", flush=True)
    _write(os.path.join(_OUT.value, "augmented.json"), {**meta, "errors": aug})

    images, _ = data_lib.subset(data["train"], _COMPARE.value * _BATCH_SIZE.value, seeds[0])
    stats = bn_offset.full_network_stats(model, variables, images, _BATCH_SIZE.value, key)
    rows = bn_offset.compare_stats(variables["batch_stats"], stats)
    _write(os.path.join(_OUT.value, "compare.json"), {**meta, "compare_batches": _COMPARE.value, "layers": rows})
    with open(os.path.join(_OUT.value, "compare.txt"), "w") as f:
      f.write(bn_offset.format_comparison(rows))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
