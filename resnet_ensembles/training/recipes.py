"""The CIFAR-10 training recipes: He et al.'s ResNets, their plain counterparts and the training variants,
built from a short argument such as "resnet32,cpu,sd" (`get_config`).

The library holds them because the staged study (`study.stages`) builds each of its runs from such an
argument; experiments/configs/cifar10.py is the config file the mains load, and documents the argument.
"""
import ml_collections

_ARCHS = ("resnet", "plain")


def _parse(arg: str):
  parts = [p for p in (arg or "resnet20").split(",") if p]
  if parts and parts[0] == "cpu":  # the networks every CPU experiment studies
    parts = ["resnet32", "cpu"] + parts[1:]
  for old, new in (("_sd", "sd"), ("_sp_forward", "sp_forward"), ("_sp_route", "sp_route")):
    if parts and parts[0].endswith(old):  # resnet110_sd == resnet110,sd
      parts = [parts[0][: -len(old)], new] + parts[1:]
  base, mods = parts[0], parts[1:]
  variant = "preact"
  if base.endswith("_original"):
    base, variant = base[: -len("_original")], "original"
  for name in _ARCHS:
    if base.startswith(name) and base[len(name):].isdigit():
      return name, int(base[len(name):]), variant, mods
  raise ValueError(f"config arg must look like resnet110, plain56 or resnet20_original[,quick,cpu,sd]; "
                   f"got {arg!r}")


def get_config(arg: str = "resnet20") -> ml_collections.ConfigDict:
  """The training config named by `arg` (experiments/configs/cifar10.py documents its format)."""
  name, depth, variant, mods = _parse(arg)
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(name=name, depth=depth, variant=variant, width=16,
                                           num_classes=10, dtype="float32"))
  c.data = ml_collections.ConfigDict(dict(source="auto", folder="", cache_dir="", train_size=0,
                                          test_size=0, subset_seed=0))
  c.seed = 0
  c.batch_size = 128
  c.eval_batch_size = 500
  c.num_epochs = 164
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.lr_boundaries = (0.5, 0.75)   # fractions of training at which lr is divided by 10
  c.lr_decay = 0.1
  c.warmup_steps = 400 if depth >= 110 else 0   # He et al.: lr 0.01 until training starts to converge
  c.warmup_lr = 0.01
  c.train_mask = ml_collections.ConfigDict(dict(kind="none", p_L=0.5, num_active=0, scale_at_test=False,
                                                        per_example=False))
  c.log_every_steps = 50
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 1
  c.keep_checkpoints = 2
  c.max_steps = -1   # stop early (after checkpointing) once this many steps are done; -1: no limit
  c.progress = True
  for mod in mods:
    if mod == "quick":
      c.num_epochs = 1
      c.data.train_size = 5000
      c.data.test_size = 2000
      c.log_every_steps = 10
    elif mod == "cpu":
      # Measured on the 2-core CPU (benchmarks/train_throughput.py): fp32 batch 128 is fastest;
      # ResNet-32 trains at ~155 img/s (~5.4 min an epoch), so 40 epochs of each network fit in ~7 h.
      c.num_epochs = 40
    elif mod == "sd":
      c.train_mask.kind = "stochastic_depth"
    elif mod == "sp_forward":
      c.train_mask.kind = "short_path_forward"
    elif mod == "sp_route":
      c.train_mask.kind = "short_path_route"
    elif mod == "scaled":  # with sp_forward: evaluate (and lesion) with branches scaled by K/n
      c.train_mask.scale_at_test = True
    else:
      raise ValueError(f"unknown config modifier {mod!r} (known: quick, cpu, sd, sp_forward, sp_route, scaled)")
  return c
