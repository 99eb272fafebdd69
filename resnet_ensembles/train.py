"""train_and_evaluate(config, workdir): SGD on CIFAR-10 (or ImageNet), data-parallel, resumable, with masks.

CIFAR-10 is small (150 MB), so every process decodes it into host memory once. Each step all processes
derive the same global batch of indices from a seeded per-epoch permutation; each process gathers only
its own rows of that batch and `jax.make_array_from_process_local_data` (`sharding.global_batch`)
assembles the global batch sharded over the `data` mesh axis; it is augmented on device from
`fold_in(key, step)`. The batch composition therefore does not depend on the number of processes or
devices: 1 process x 4 devices and 2 processes x 2 devices train identically. Only process 0 writes
metrics; all processes save/restore the orbax checkpoints together. ImageNet configs (model
"imagenet_resnet") stream their shares instead and run the same loop (`fit`) in `train_imagenet.py`.
"""
from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import threading
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct

from resnet_ensembles import checkpoints, data as data_lib, metrics as metrics_lib, models, provenance, samplers
from resnet_ensembles.sharding import (data_mesh, global_batch, process_rows, replicate, replicated_spec,
                                      shard_host_batch)


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def build_model_from_config(config) -> models.CifarResNet:
  m = config.model
  return models.build_model(m.name, m.depth, m.variant, m.num_classes, m.width, jnp.dtype(m.dtype),
                            m.get("shortcut_pad", "end"), m.get("input_stats", "cifar10"))


def learning_rate_fn(config, steps_per_epoch: int) -> optax.Schedule:
  """Step (lr x lr_decay at each boundary fraction of training) or cosine decay; warm-up either constant
  at warmup_lr for warmup_steps (He et al.'s ResNet-110) or linear from 0 over warmup_epochs (Goyal et al.)."""
  total = config.num_epochs * steps_per_epoch
  kind = config.get("lr_schedule", "step")
  linear = int(config.get("warmup_epochs", 0) * steps_per_epoch)
  if kind == "step":
    bounds = {int(f * total): config.lr_decay for f in config.lr_boundaries}
    main = optax.piecewise_constant_schedule(config.learning_rate, bounds)
  elif kind == "cosine":  # over the steps after a linear warm-up, as in the Flax ImageNet example
    main = optax.join_schedules([optax.constant_schedule(config.learning_rate),
                                 optax.cosine_decay_schedule(config.learning_rate, max(total - linear, 1))], [linear])
  else:
    raise ValueError(f"lr_schedule must be 'step' or 'cosine', got {kind!r}")
  if linear:
    return lambda step: jnp.where(step < linear, config.learning_rate * step / linear, main(step))
  if not config.get("warmup_steps", 0):
    return main
  return lambda step: jnp.where(step < config.warmup_steps, config.warmup_lr, main(step))


def make_optimizer(config, lr_fn: optax.Schedule) -> optax.GradientTransformation:
  # Torch-style coupled weight decay (added to the gradient before momentum), as in the authors' code.
  return optax.chain(optax.add_decayed_weights(config.weight_decay),
                     optax.sgd(lr_fn, momentum=config.momentum))


def create_state(config, model, tx, key: jax.Array, image_size: int = 32) -> TrainState:
  variables = model.init(key, jnp.zeros((1, image_size, image_size, 3), jnp.float32))
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                    batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))


def init_from_trained(state: TrainState, config, model, tx) -> TrainState:
  """A fresh run that starts from a trained network (`config.init_from`: a workdir or exported folder,
  e.g. an imported PyTorch network) with a new optimizer state; a resumed run ignores it."""
  trained_model, variables, _ = checkpoints.load_trained(config.init_from)
  if trained_model != model:
    raise ValueError(f"init_from {config.init_from} holds {trained_model}, but the config builds {model}")
  shapes = lambda tree: jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), tree)
  if shapes(variables["params"]) != shapes(jax.device_get(state.params)):
    raise ValueError(f"init_from {config.init_from}: its parameters do not match the configured network")
  params = jax.tree.map(jnp.asarray, variables["params"])
  return state.replace(params=params, batch_stats=jax.tree.map(jnp.asarray, variables["batch_stats"]),
                       opt_state=tx.init(params))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def train_step(state: TrainState, batch: dict, key: jax.Array, *, model, tx,
               sampler: Optional[samplers.Sampler],
               preprocess: Callable[[jax.Array, jax.Array], jax.Array] = data_lib.augment
               ) -> tuple[TrainState, dict]:
  """One SGD step. Randomness: fold_in(key, step) -> `preprocess(key, uint8 images)` (CIFAR: the
  paper's augmentation; ImageNet: normalisation only, augmented on the host) and the mask sampler."""
  step_key = jax.random.fold_in(key, state.step)
  aug_key, mask_key = jax.random.split(step_key)
  images = preprocess(aug_key, batch["image"])
  mask, route = sampler(mask_key) if sampler is not None else (None, None)

  def loss_fn(params):
    logits, new_vars = model.apply({"params": params, "batch_stats": state.batch_stats}, images,
                                   train=True, block_mask=mask, grad_route=route, mutable=["batch_stats"])
    logits = logits.astype(jnp.float32)  # a no-op in fp32; the loss of bf16 models in fp32
    return cross_entropy(logits, batch["label"]), (logits, new_vars["batch_stats"])

  (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if mask is not None and mask.ndim == 1:  # per-example masks: every block ran, on the whole batch
    stats = models.keep_stats_of_inactive_blocks(state.batch_stats, stats, mask)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            batch_stats=stats, opt_state=opt_state)
  error = jnp.mean(jnp.argmax(logits, -1) != batch["label"])
  return new_state, {"loss": loss, "error": error}


def eval_step(variables, batch: dict, *, model, block_mask=None) -> dict:
  """Sums (not means) so padded batches can be weighted exactly."""
  logits = model.apply(variables, data_lib.normalize_for(model, batch["image"]), train=False,
                       block_mask=block_mask)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  wrong = (jnp.argmax(logits, -1) != batch["label"]).astype(jnp.float32)
  w = batch["weight"]
  return {"wrong": jnp.sum(wrong * w), "loss": jnp.sum(losses * w), "count": jnp.sum(w)}


@functools.lru_cache(maxsize=None)
def eval_program(step_fn: Callable, model, mesh, **static) -> Callable:
  """One compiled `step_fn` per (model, mesh, static settings), reused by every evaluation of a run."""
  return jax.jit(functools.partial(step_fn, model=model, **static), out_shardings=replicated_spec(mesh))


def evaluate(variables, split: data_lib.Split, *, model, batch_size: int, mesh,
             block_mask=None) -> dict:
  """Test error and loss over a whole split, in padded batches sharded over the mesh."""
  images, labels = split
  bs = _round_up(min(batch_size, len(labels)), mesh.size)
  program = eval_program(eval_step, model, mesh)
  fn = lambda v, batch: program(v, batch, block_mask=block_mask)
  totals = {"wrong": 0.0, "loss": 0.0, "count": 0.0}
  for start in range(0, len(labels), bs):
    x, y = images[start:start + bs], labels[start:start + bs]
    pad = bs - len(y)
    batch = {"image": np.pad(x, ((0, pad), (0, 0), (0, 0), (0, 0))), "label": np.pad(y, (0, pad)),
             "weight": np.pad(np.ones(len(y), np.float32), (0, pad))}
    out = fn(variables, shard_host_batch(batch, mesh))
    for k in totals:
      totals[k] += float(out[k])
  return {"test_error": totals["wrong"] / totals["count"], "test_loss": totals["loss"] / totals["count"]}


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def load_data(config, workdir: Optional[str] = None) -> dict[str, data_lib.Split]:
  """Loads the configured splits; records in workdir/data.json which source was used."""
  d = config.data
  out = data_lib.load_cifar10(d.source, d.folder or None, d.cache_dir or None)
  if workdir and jax.process_index() == 0:
    kind, folder = data_lib.resolve_source(d.source, d.folder or None)
    desc = "CIFAR-10 (TFDS cifar10)" if kind == "tfds" else f"CIFAR-10 (image folder {folder})"
    if folder and "cifar10-jpeg" in folder:
      desc = "CIFAR-10 (JPEG q75 copy)"
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "data.json"), "w") as f:
      json.dump({"description": desc, "source": kind, "folder": folder}, f)
  out["train"] = data_lib.subset(out["train"], d.train_size, d.subset_seed)
  out["test"] = data_lib.subset(out["test"], d.test_size, d.subset_seed + 1)
  return out


def validate_config(config) -> None:
  """Clear one-line errors before anything is compiled."""
  from resnet_ensembles.layout import cifar_layout
  if config.model.name not in ("resnet", "plain"):
    raise ValueError(f"config.model.name must be 'resnet', 'plain' (CIFAR-10) or 'imagenet_resnet', "
                     f"got {config.model.name!r}")
  cifar_layout(config.model.depth, config.model.width)
  if config.model.variant not in ("preact", "original"):
    raise ValueError(f"config.model.variant must be 'preact' or 'original', got {config.model.variant!r}")
  if config.batch_size % jax.device_count():
    raise ValueError(f"batch_size {config.batch_size} is not divisible by {jax.device_count()} devices")
  if config.num_epochs < 1:
    raise ValueError(f"num_epochs must be >= 1, got {config.num_epochs}")
  samplers.make_sampler(config.train_mask, cifar_layout(config.model.depth), config.batch_size)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data: Optional[dict] = None) -> dict:
  """Trains (resuming from the last checkpoint in `workdir`) and returns the final metrics."""
  if config.model.name == "imagenet_resnet":
    if data is not None:
      raise ValueError("ImageNet configs stream their data (config.data); `data` is for CIFAR-10 arrays")
    from resnet_ensembles import train_imagenet
    return train_imagenet.train_and_evaluate(config, workdir)
  validate_config(config)
  model = build_model_from_config(config)
  data = data if data is not None else load_data(config, workdir)
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

  test_mask = samplers.test_time_mask(config.train_mask, model.layout)
  evaluate_fn = lambda variables: evaluate(variables, data["test"], model=model, batch_size=config.eval_batch_size,
                                           mesh=mesh, block_mask=test_mask)
  preprocess = functools.partial(data_lib.augment, stats=model.input_stats)
  return fit(config, workdir, model=model, mesh=mesh, steps_per_epoch=steps_per_epoch, batches=batches,
             evaluate_fn=evaluate_fn, preprocess=preprocess)


class Preemption:
  """SIGTERM (a scheduler's preemption notice, or the end of a working session) stops training at the
  next step with a checkpoint, so a rerun loses nothing. Several processes agree on that step through
  JAX's preemption sync point (orbax `reached_preemption`); one process watches for the signal itself.
  A notice that arrives too late to act on (after the last step) is re-delivered on `close`."""

  def __init__(self, manager):
    self.manager, self.requested, self.acted, self.previous = manager, False, False, None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, self._notice)

  def _notice(self, signum, frame) -> None:
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      try:
        return self.manager.reached_preemption(step)
      except RuntimeError:  # the preemption service is off: nothing to watch
        return False
    return self.requested

  def close(self) -> None:
    if self.previous is None:
      return
    signal.signal(signal.SIGTERM, self.previous)
    if self.requested and not self.acted:
      signal.raise_signal(signal.SIGTERM)


def fit(config, workdir: str, *, model, mesh, steps_per_epoch: int, batches: Callable[[int], Iterator[dict]],
        evaluate_fn: Callable[[dict], dict], preprocess: Callable = data_lib.augment, image_size: int = 32) -> dict:
  """The loop every dataset shares: restore, step, log, evaluate and checkpoint every configured epoch.

  `batches(start_step)` yields the global batches (sharded over `mesh`) from `start_step` on;
  `evaluate_fn(variables)` returns a dict with at least "test_error"."""
  total_steps = config.num_epochs * steps_per_epoch
  lr_fn = learning_rate_fn(config, steps_per_epoch)
  tx = make_optimizer(config, lr_fn)
  sampler = samplers.make_sampler(config.train_mask, model.layout, config.batch_size)
  ckpt = checkpoints.Checkpointer(workdir, config, keep=config.keep_checkpoints)
  # Replicated first, so that orbax restores straight into the global (multi-host) layout.
  state = replicate(create_state(config, model, tx, jax.random.PRNGKey(config.seed), image_size), mesh)
  state = ckpt.restore_or(state)
  start_step = int(state.step)
  if start_step == 0 and config.get("init_from"):
    state = replicate(init_from_trained(state, config, model, tx), mesh)
  writer = metrics_lib.MetricWriter(workdir, resume_step=start_step)
  if start_step:
    logging.info("Resumed from step %d (epoch %d) in %s", start_step, start_step // steps_per_epoch, workdir)
  if jax.process_index() == 0:
    provenance.record_start(workdir, start_step)

  step_fn = jax.jit(functools.partial(train_step, model=model, tx=tx, sampler=sampler, preprocess=preprocess),
                    donate_argnums=0)
  key = jax.random.PRNGKey(config.seed + 1)
  last_steps = total_steps if config.max_steps < 0 else min(total_steps, config.max_steps)
  progress = metrics_lib.Progress(start_step, last_steps, config.batch_size, enabled=config.progress,
                                  previous_wall_s=writer.previous_wall_s)
  pending, result, window_start = [], {}, start_step
  variables_of = lambda state: {"params": state.params, "batch_stats": state.batch_stats}
  preemption = Preemption(ckpt.manager)
  try:
    in_flight = None
    for step, batch in zip(range(start_step, last_steps), batches(start_step)):
      state, m = step_fn(state, batch, key)
      if in_flight is not None:  # at most two steps queued: a stop request is acted on within a step
        jax.block_until_ready(in_flight)
      in_flight = m
      pending.append(m)
      done = step + 1
      preempted = preemption.reached(done) and done < last_steps  # asked every step, on every process
      end_of_epoch = done % steps_per_epoch == 0
      if done % config.log_every_steps == 0 or end_of_epoch or done == last_steps or preempted:
        summary = metrics_lib.mean_finite_or_raise(pending, window_start, done)
        summary["lr"] = float(lr_fn(done - 1))
        summary.update(progress.update(done))
        writer.write(done, summary, prefix="train")
        pending, window_start = [], done
      if (end_of_epoch and (done // steps_per_epoch) % config.eval_every_epochs == 0) or done == last_steps:
        result = evaluate_fn(variables_of(state))
        result["epoch"] = done / steps_per_epoch
        writer.write(done, result, prefix="eval")
        logging.info("epoch %.2f  test error %.2f%%", result["epoch"], 100 * result["test_error"])
      if ((end_of_epoch and (done // steps_per_epoch) % config.checkpoint_every_epochs == 0)
          or done == last_steps or preempted):
        ckpt.save(done, state)
      if preempted:
        logging.warning("SIGTERM: stopped at step %d with a checkpoint; rerun the same command to resume", done)
        preemption.acted, result = True, {"preempted": True}
        break
  finally:
    ckpt.close()  # waits for the last checkpoint to be written
    writer.close()
    preemption.close()
  if not result:  # nothing left to train: report the restored network
    result = evaluate_fn(variables_of(state))
  result["step"] = int(state.step)
  result["state"] = state
  return result
