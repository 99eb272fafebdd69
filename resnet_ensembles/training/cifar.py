"""train_and_evaluate for CIFAR-10: the dataset in host memory, the same global batches on any mesh.

CIFAR-10 is small (150 MB), so every process decodes it into host memory once. Each step all processes
derive the same global batch of indices from a seeded per-epoch permutation; each process gathers only
its own rows of that batch and `jax.make_array_from_process_local_data` (`mesh.global_batch`)
assembles the global batch sharded over the `data` mesh axis; it is augmented on device from
`fold_in(key, step)`. The batch composition therefore does not depend on the number of processes or
devices: 1 process x 4 devices and 2 processes x 2 devices train identically. Only process 0 writes
metrics; all processes save/restore the orbax checkpoints together.
"""
from __future__ import annotations

import functools
import itertools
from typing import Optional

import jax
import ml_collections
import numpy as np

from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data_lib, for_run
from resnet_ensembles.models import samplers
from resnet_ensembles.models.layout import cifar_layout
from resnet_ensembles.parallel.mesh import data_mesh, global_batch, process_rows
from resnet_ensembles.training import schedules, steps
from resnet_ensembles.training.loop import fit


def validate_config(config) -> None:
  """Clear one-line errors before anything is compiled."""
  if config.model.name not in ("resnet", "plain", "vit"):
    raise ValueError(f"config.model.name must be 'resnet', 'plain' or 'vit' for CIFAR-10, got {config.model.name!r}")
  if config.model.name != "vit":
    cifar_layout(config.model.depth, config.model.width)
    if config.model.variant not in ("preact", "original"):
      raise ValueError(f"config.model.variant must be 'preact' or 'original', got {config.model.variant!r}")
  if config.batch_size % jax.device_count():
    raise ValueError(f"batch_size {config.batch_size} is not divisible by {jax.device_count()} devices")
  if config.num_epochs < 1:
    raise ValueError(f"num_epochs must be >= 1, got {config.num_epochs}")
  samplers.make_sampler(config.train_mask, models.from_config(config).layout, config.batch_size)
  schedules.make_optimizer(config, lambda step: 0.0)


def evaluate_trained(config, model, variables, test, mesh=None) -> dict:
  """Test error and loss of `variables` as training evaluates them (the run's test-time mask, its eval batch):
  also for a finished run kept as its exported network only (study.stages.train_run)."""
  return steps.evaluate(variables, test, model=model, batch_size=config.eval_batch_size,
                        mesh=data_mesh() if mesh is None else mesh,
                        block_mask=samplers.test_time_mask(config.train_mask, model.layout))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data: Optional[dict] = None) -> dict:
  """Trains (resuming from the last checkpoint in `workdir`) and returns the final metrics; `data` (the
  {"train", "test"} uint8 splits) skips loading when the caller already holds them."""
  validate_config(config)
  model = models.from_config(config)
  data = data if data is not None else for_run.load(config, workdir)
  train_x, train_y = data["train"]
  if len(train_y) < config.batch_size:
    raise ValueError(f"training split has {len(train_y)} images, fewer than one batch ({config.batch_size})")
  mesh = data_mesh()
  steps_per_epoch = len(train_y) // config.batch_size
  rows = process_rows(mesh, config.batch_size)  # this process's rows of every global batch

  def batches(start_step: int):
    """Epoch e visits a permutation seeded by (seed, e): the same batches however often the run resumes."""
    for step in itertools.count(start_step):
      epoch, offset = divmod(step, steps_per_epoch)
      if offset == 0 or step == start_step:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(train_y))
      idx = order[offset * config.batch_size:(offset + 1) * config.batch_size][rows]
      yield global_batch({"image": train_x[idx], "label": train_y[idx]}, mesh, config.batch_size)

  evaluate_fn = lambda variables: evaluate_trained(config, model, variables, data["test"], mesh=mesh)
  preprocess = functools.partial(data_lib.augment, stats=model.input_stats)
  return fit(config, workdir, model=model, mesh=mesh, steps_per_epoch=steps_per_epoch, batches=batches,
             evaluate_fn=evaluate_fn, preprocess=preprocess)
