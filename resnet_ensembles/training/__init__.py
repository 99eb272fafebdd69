"""Training: `train_and_evaluate(config, workdir)` for any model kind, and the pieces it is made of.

  steps.py      the pure jitted steps (SGD step, evaluation step) and the train state
  schedules.py  learning-rate schedules and the optimizer
  loop.py       `fit`: the loop every dataset shares (resume, log, evaluate, checkpoint, SIGTERM)
  cifar.py      CIFAR-10 in host memory;  imagenet.py  ImageNet streamed per process
  metrics.py    metrics.jsonl + TensorBoard, progress lines
  recipes.py    the CIFAR-10 training configs by name ("resnet32,cpu,sd"), for the configs and the study
May import models, data, parallel, store, utils; never lesion, paths, study or plots.
"""
from __future__ import annotations

import importlib
from typing import Optional

from resnet_ensembles.store import lock

# model.name -> the module whose train_and_evaluate trains it (imported on use: ImageNet needs TensorFlow).
TRAINERS = {"resnet": "resnet_ensembles.training.cifar", "plain": "resnet_ensembles.training.cifar",
            "vit": "resnet_ensembles.training.cifar", "imagenet_resnet": "resnet_ensembles.training.imagenet"}


def trainer_for(config):
  name = config.model.name
  if name not in TRAINERS:
    raise ValueError(f"config.model.name must be one of {sorted(TRAINERS)}, got {name!r}")
  return importlib.import_module(TRAINERS[name])


def train_and_evaluate(config, workdir: str, data: Optional[dict] = None) -> dict:
  """Trains the configured network (resuming from `workdir`) and returns its final metrics. `data`: CIFAR-10
  splits already in memory (ImageNet configs stream theirs and refuse it). A second process on the same
  `workdir` fails at once with one line naming the pid that holds it (`store.lock`)."""
  trainer = trainer_for(config)
  with lock.hold(workdir):  # before the trainer writes anything (data.json, config.json); fit holds it too
    if data is not None:
      return trainer.train_and_evaluate(config, workdir, data=data)
    return trainer.train_and_evaluate(config, workdir)
