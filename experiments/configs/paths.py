r"""Path analysis of a trained ResNet (Veit et al. Sec. 5.2, Fig. 6).

  python -m experiments.paths --workdir=runs/r110 [--config=experiments/configs/paths.py:paper]

The argument picks a preset, optionally followed by comma-separated modifiers:
  cpu    (default) 100 sampled routes per path length over 10 training batches of 32 images: the paper's
         estimate at a tenth of its samples, sized for the 2-core CPU;
  paper  1,000 routes per length as in the paper (over 100 batches of 32);
  quick  a smoke run: 10 routes per length from 2 batches of 16;
  batch_bn  BatchNorm with batch statistics instead of the stored ones (inference mode is the default).
Any field can be overridden: --config.samples_per_length=200 --config.share=0.95.
"""
import ml_collections


def get_config(arg: str = "cpu") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.split = "train"             # the paper samples random training batches
  c.samples_per_length = 100    # routes of each length k = 0..n (the paper: 1,000)
  c.num_batches = 10            # random batches the samples spread over; one forward pass each
  c.batch_size = 32
  c.exact_batches = 2           # batches (the first of the sampled ones) for the exact decomposition G_k
  c.bn = "inference"            # "inference": stored statistics; "batch": statistics of each batch
  c.share = 0.9                 # the effective range carries this share of the total gradient
  c.route_chunk = 64            # routes per vmapped backward call (memory: chunk x batch x activations)
  c.seed = 0
  for mod in [p for p in (arg or "cpu").split(",") if p]:
    if mod == "cpu":
      pass
    elif mod == "paper":
      c.samples_per_length, c.num_batches = 1000, 100
    elif mod == "quick":
      c.samples_per_length, c.num_batches, c.batch_size, c.exact_batches = 10, 2, 16, 1
    elif mod == "batch_bn":
      c.bn = "batch"
    else:
      raise ValueError(f"unknown paths config modifier {mod!r} (known: cpu, paper, quick, batch_bn)")
  return c
