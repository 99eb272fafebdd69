r"""Fine-tune a trained network (e.g. one imported from PyTorch) on this machine's CIFAR-10 copy.

  python -m experiments.train --config=experiments/configs/finetune.py:results/depth_series/imported/resnet20 \
      --workdir=runs/ft20

(an imported folder's weights are regenerated, not committed: `python -m experiments.import_torch --all_akamaster`)

The argument is the trained folder (a workdir or an exported/imported folder), then optional
comma-separated `key=value` settings: `epochs` (default 3), `lr` (peak learning rate, default 0.01).
The network keeps its architecture exactly (variant, shortcut channel placement, input statistics) as the
folder's config.json records it; training is the paper's recipe (SGD, momentum 0.9, wd 1e-4, batch 128,
flip + 4-pixel pad-crop) with a cosine decay from `lr` to 0, starting from the folder's weights and
BatchNorm statistics with a fresh optimizer. Any field can be overridden as usual (--config.num_epochs=2).
"""
import json
import os

import ml_collections

from experiments.configs import cifar10

_DEFAULTS = {"epochs": 3, "lr": 0.01}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  folder, *opts = [p for p in (arg or "").split(",") if p] or [""]
  if not folder:
    raise ValueError("finetune config needs the trained folder: --config=experiments/configs/finetune.py:DIR")
  settings = dict(_DEFAULTS)
  for opt in opts:
    key, _, value = opt.partition("=")
    if key not in _DEFAULTS or not value:
      raise ValueError(f"finetune option must be epochs=N or lr=X, got {opt!r}")
    settings[key] = type(_DEFAULTS[key])(value)
  path = os.path.join(folder, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{folder} is not a trained network folder: no config.json")
  with open(path) as f:
    saved = json.load(f)
  if "imported_from" in saved and not os.path.exists(os.path.join(folder, "variables.msgpack")):
    raise FileNotFoundError(f"{folder} has no variables.msgpack (imported weights are git-ignored): run "
                            f"`python -m experiments.import_torch --all_akamaster` first")
  model = saved["model"]
  c = cifar10.get_config(f"{model['name']}{model['depth']}")
  c.model = ml_collections.ConfigDict(model)
  c.init_from = folder
  c.num_epochs = settings["epochs"]
  c.learning_rate = settings["lr"]
  c.lr_schedule = "cosine"
  c.warmup_steps = 0
  return c
