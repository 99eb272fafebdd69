r"""The whole Veit et al. study as one staged run (experiments/reproduce.py).

  python -m experiments.reproduce --config=experiments/configs/reproduce.py:cpu --workdir=runs/repro

Presets:
  cpu    ResNet-32 / plain-32 (+ stochastic depth, short-path route and forward) with the `cpu` settings of
         experiments/configs/cifar10.py (40 epochs), data from the JPEG folder in $CIFAR10_DIR,
         10 random lesions per k, 1,000 sampled routes per path length as in the paper (the `paper`
         path-analysis preset: 2,470 s for the ResNet-32 on this CPU);
  paper  pre-activation ResNet-110 / plain-110, 164 epochs, TFDS cifar10, the `paper` path preset;
  paper_jpeg  `paper` on the CIFAR-10 JPEG copy packed into .devdata/cifar10-jpeg.cifarpack (a path relative
         to the repository root, so a study resumed on another machine keeps its config): the study that
         experiments/paper_chain.py advances piece by piece on a GPU reached for short commands
         (docs/paper_chain.md);
  resnet110_cpu  the paper's pre-activation ResNet-110 alone, trained with the `cpu` recipe of the ResNet-32
         (40 epochs, same schedule and augmentation; ResNet-110 keeps He et al.'s 400 warm-up steps at lr 0.01)
         on the same pack, advanced by experiments/paper_chain.py in pieces of any length on any processor,
         then studied with the depth series' settings (experiments/configs/depth_series.py) as its n = 54 point;
  tiny   a test-sized run: depth 20 (see below), 1 epoch on 64 training / 100 test images, batch 32,
         2 lesions per k, k <= 2, the `quick` path preset with 2 routes per length from one batch.
The forward short-path run (`short_fwd`) is evaluated and lesioned with its branches scaled by K/n
(modifier `scaled`): for the `cpu` ResNet-32 that is 21.09% test error against 73.34% unscaled, and a lesion
study of a network at 73% says little. The train stage measures both treatments for the report.
Note on `tiny`: depth 8 would be smaller still, but a depth-8 CIFAR ResNet has 3 blocks that are all stage
openers, so the k-deletion sweep (openers excluded) and the reordering sweep (two non-openers in one stage
needed) cannot run on it; depth 20 (9 blocks, 2 movable per stage) is the smallest depth that runs all sweeps.
Any field can be overridden: --config.train.num_epochs=2 --config.lesion.num_samples=5.
`train.dtype` / `train.matmul_precision` (empty: the networks' own float32, JAX's default precision) set the
compute precision of every run; experiments/paper_chain.py sets them from its speed measurement. `chain` holds
the settings of experiments/paper_chain.py (ignored by experiments/reproduce.py).
"""
import os

import ml_collections

from experiments.configs import depth_series as depth_series_config
from experiments.configs import paths as paths_config


def get_config(arg: str = "cpu") -> ml_collections.ConfigDict:
  if arg not in PRESETS:
    raise ValueError(f"reproduce config arg must be one of {', '.join(PRESETS)}; got {arg!r}")
  preset = arg
  jpeg = arg in ("paper_jpeg", "resnet110_cpu")
  arg = "paper" if arg == "paper_jpeg" else arg
  c = ml_collections.ConfigDict()
  c.preset = preset
  t = c.train = ml_collections.ConfigDict()
  depth = {"cpu": 32, "paper": 110, "resnet110_cpu": 110, "tiny": 20}[arg]
  mod = "" if arg == "paper" else ",cpu"   # experiments/configs/cifar10.py modifiers
  # label -> experiments/configs/cifar10.py:get_config argument
  t.runs = ml_collections.ConfigDict({"resnet": f"resnet{depth}{mod}", "plain": f"plain{depth}{mod}",
                                      "sd": f"resnet{depth}{mod},sd", "short": f"resnet{depth}{mod},sp_route",
                                      "short_fwd": f"resnet{depth}{mod},sp_forward,scaled"})
  t.source = "tfds" if arg == "paper" and not jpeg else "folder"
  t.folder = PACK if jpeg else "" if arg == "paper" else os.environ.get("CIFAR10_DIR", "")
  t.dtype = ""              # "" keeps each network's own (float32); "bfloat16" computes in bf16
  t.matmul_precision = ""   # "" is JAX's default (TF32 convolutions on recent NVIDIA GPUs); "highest": fp32
  if arg == "resnet110_cpu":  # convolutions 16 images at a time: the same network, trained ~1.6x faster on a CPU
    t.conv_chunk = 16         # (models.cifar.CifarResNet.conv_chunk; BatchNorm still sees the batch of 128)
  t.num_epochs = {"cpu": 40, "paper": 164, "resnet110_cpu": 40, "tiny": 1}[arg]
  t.batch_size = 32 if arg == "tiny" else 128
  t.train_size = 64 if arg == "tiny" else 0
  t.test_size = 100 if arg == "tiny" else 0
  t.progress = arg != "tiny"

  le = c.lesion = ml_collections.ConfigDict()
  le.bn = "stored"
  le.num_samples = 2 if arg == "tiny" else 10
  le.max_k = 2 if arg == "tiny" else 20
  le.seed = 0
  le.batch_size = 100 if arg == "tiny" else 500
  le.memory_budget_mb = 512
  # bn=recalibrate (experiments/paper_chain.py's extra sweeps): training batches x images that re-estimate the
  # BatchNorm statistics of each lesioned network (the paper-scale presets: lesion_study's 4 x 128)
  le.recal_batches, le.recal_batch_size = (2, 32) if arg == "tiny" else (4, 128)

  c.paths = paths_config.get_config({"cpu": "paper", "paper": "paper", "resnet110_cpu": "cpu", "tiny": "quick"}[arg])
  if arg == "tiny":  # two routes per length from one batch: every code path of the analysis, in seconds
    c.paths.samples_per_length, c.paths.num_batches = 2, 1
  # Bump a version when its code changes what the stage writes: a rerun then redoes that stage (and later ones).
  c.figures = ml_collections.ConfigDict(dict(version=1))
  c.report = ml_collections.ConfigDict(dict(version=4))  # 3: verdicts compare effect sizes (study/verdicts.py);
  # 4: a flat k-deletion curve is "no", a reordering costing less than the paper's is within size

  # experiments/paper_chain.py: the speed measurement that picks the precision, and the BatchNorm treatments
  # swept (lesion.bn and these); the study's runs in the order the chain trains them.
  ch = c.chain = ml_collections.ConfigDict()
  ch.runs = ("resnet",) if arg == "resnet110_cpu" else ("resnet", "plain", "sd", "short", "short_fwd")
  ch.extra_bn = ("recalibrate",)
  ch.state_dir = "results/resnet110_cpu" if arg == "resnet110_cpu" else "results/paper110"
  ch.speed = arg != "resnet110_cpu"   # the precision measurement: off a GPU JAX computes in fp32 anyway
  if arg == "resnet110_cpu":
    # sweeps-resnet runs the depth series' sweeps and path analysis (its settings: single deletions on all
    # 10,000 test images, k deletions and reorderings 10 per k on 2,000, both BatchNorm treatments, the `cpu`
    # paths preset) on this network alone, as the series' n = 54 point named chain.series_name
    c.series = depth_series_config.get_config("cpu")
    c.series.networks, c.series.order, c.series.fit_networks, c.series.joined = {}, [], [], {}
    c.series.bns = ("stored", "recalibrate")   # recalibrated from each lesion's first changed position on
    c.series.labels["own_resnet110"] = "ResNet-110 (own, pre-act)"
    # k deletions at 12 of its 51 deletable counts (10 each, 4x fewer than every k): 5 / 10 / 20 are the
    # paper's 10% / 20% / 40% fractions, the rest draw the curve
    c.series.multi.ks = (1, 2, 3, 5, 7, 10, 14, 20, 27, 35, 43, 51)
    ch.series_name = "own_resnet110"
  ch.speed_warmup = 2 if arg == "tiny" else 20    # untimed steps after the compiling one
  ch.speed_steps = 3 if arg == "tiny" else 100    # timed steps per precision (batch train.batch_size)
  ch.check_steps = 6 if arg == "tiny" else 400    # bf16 accuracy check: steps of real training in each
  return c


PRESETS = ("cpu", "paper", "paper_jpeg", "resnet110_cpu", "tiny")
PACK = ".devdata/cifar10-jpeg.cifarpack"  # python -m experiments.paper_chain --prepare writes it
