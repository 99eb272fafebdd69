r"""The depth series (experiments/depth_series.py): Veit et al.'s lesion and path study on ResNets of four depths.

  python -m experiments.depth_series --config=experiments/configs/depth_series.py:cpu --workdir=runs/depth_series

Presets:
  cpu   the four imported akamaster ResNets (20/32/44/56: 9/15/21/27 blocks) fine-tuned on the JPEG copy
        (results/depth_series/finetuned/), and the project's own pre-activation ResNet-32 (results/repro) as
        the same-depth contrast; single deletions on all 10,000 test images, k deletions (10 per k, every k up
        to all deletable blocks) and reorderings (10 per swap count, 1..20 swaps) on 2,000 test images, stored
        and recalibrated BatchNorm; the path analysis with the `cpu` paths preset (100 routes per length).
  tiny  a test-sized run on networks named by --config.networks (see tests/test_depth_series.py).
Any field can be overridden: --config.multi.test_images=5000 --config.bns='("stored",)'.
"""
import os

import ml_collections

from experiments.configs import paths as paths_config

FINETUNED = "results/depth_series/finetuned"


def get_config(arg: str = "cpu") -> ml_collections.ConfigDict:
  if arg not in ("cpu", "tiny"):
    raise ValueError(f"depth_series config arg must be cpu or tiny; got {arg!r}")
  c = ml_collections.ConfigDict()
  c.networks = ml_collections.ConfigDict(
      {f"resnet{d}": f"{FINETUNED}/resnet{d}" for d in (20, 32, 44, 56)} | {"own_resnet32": "results/repro/train/resnet"}
      if arg == "cpu" else {})
  c.labels = ml_collections.ConfigDict({f"resnet{d}": f"ResNet-{d} (imported, fine-tuned)" for d in (20, 32, 44, 56)}
                                       | {"own_resnet32": "ResNet-32 (own, pre-act)",
                                          "own_resnet110": "ResNet-110 (own, pre-act)"})
  c.order = ["resnet20", "resnet32", "own_resnet32", "resnet44", "resnet56"] if arg == "cpu" else []  # cheapest first
  c.fit_networks = [f"resnet{d}" for d in (20, 32, 44, 56)] if arg == "cpu" else []
  # networks swept elsewhere with these settings whose folders join the table and figure once they exist (not
  # swept or fitted here): the ResNet-110 trained with the own ResNet-32's recipe (reproduce.py:resnet110_cpu)
  c.joined = ml_collections.ConfigDict(
      {"own_resnet110": "results/resnet110_cpu/depth_series/own_resnet110"} if arg == "cpu" else {})
  # recalibrate: from each lesion's first changed position on; recalibrate_all: every statistic (the intact
  # network shifts too; the sweeps made so are kept beside the others)
  c.bns = ("stored", "recalibrate", "recalibrate_all")
  c.sweeps = ("single", "multi", "reorder")
  c.data_folder = os.environ.get("CIFAR10_DIR", "")
  c.subset_seed = 1            # which test images the k-deletion and reorder sweeps use
  c.batch_size = 100 if arg == "tiny" else 500
  c.memory_budget_mb = 512
  c.recal_batches, c.recal_batch_size = 4, 128
  c.single = ml_collections.ConfigDict(dict(test_images=100 if arg == "tiny" else 0))
  c.multi = ml_collections.ConfigDict(dict(test_images=100 if arg == "tiny" else 2000, num_samples=2 if arg == "tiny"
                                           else 10, max_k=64, seed=0))
  c.multi.ks = ()              # the k to draw; empty: every k up to max_k (capped by the deletable blocks)
  c.reorder = ml_collections.ConfigDict(dict(test_images=100 if arg == "tiny" else 2000, num_samples=2 if arg == "tiny"
                                             else 10, max_k=2 if arg == "tiny" else 20, seed=0))
  c.paths = paths_config.get_config("quick" if arg == "tiny" else "cpu")
  if arg == "tiny":  # two routes per length from one batch: every code path of the analysis, in seconds
    c.paths.samples_per_length, c.paths.num_batches = 2, 1
  c.with_paths = True          # False: the lesion sweeps only
  return c
