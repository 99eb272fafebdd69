"""The pure per-step functions every trainer jits: one SGD step, one evaluation step, and their state.

Randomness comes from `fold_in(key, step)`, so a resumed run draws exactly what an uninterrupted one
would. Evaluation sums (not means) over padded batches so any split size is weighted exactly.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles import models
from resnet_ensembles.models import samplers, variables as model_variables
from resnet_ensembles.parallel.mesh import replicated_spec, shard_host_batch
from resnet_ensembles.store import checkpoints


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def create_state(config, model, tx, key: jax.Array, image_size: int = 32) -> TrainState:
  """A fresh state: the variables and the optimizer's zeros each from one compiled program."""
  variables = models.init_variables(model, key, image_size)
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                    batch_stats=variables.get("batch_stats", {}), opt_state=jax.jit(tx.init)(variables["params"]))


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
  return state.replace(params=params, batch_stats=jax.tree.map(jnp.asarray, variables.get("batch_stats", {})),
                       opt_state=tx.init(params))


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Mean cross-entropy; with `label_smoothing` e the target is (1 - e) one-hot + e / C (Szegedy et al.)."""
  if not label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def train_step(state: TrainState, batch: dict, key: jax.Array, *, model, tx,
               sampler: Optional[samplers.Sampler],
               preprocess: Callable[[jax.Array, jax.Array], jax.Array] = data_lib.augment,
               label_smoothing: float = 0.0, microbatches: int = 1) -> tuple[TrainState, dict]:
  """One optimizer step. Randomness: fold_in(key, step) -> `preprocess(key, uint8 images)` (CIFAR: the
  paper's augmentation; ImageNet: normalisation only, augmented on the host) and the mask sampler.

  `microbatches` > 1 computes the gradient of the same batch in that many equal slices, one after the
  other, and averages them: the same step (up to float summation order) in a smaller working set, which
  on this CPU's caches trains a ViT faster (benchmarks/vit_throughput.py). Only for networks without
  BatchNorm, whose statistics would otherwise be taken over a slice instead of the batch."""
  step_key = jax.random.fold_in(key, state.step)
  aug_key, mask_key = jax.random.split(step_key)
  images = preprocess(aug_key, batch["image"])
  mask, route = sampler(mask_key) if sampler is not None else (None, None)
  check_microbatches(model, microbatches, images.shape[0], sampler)

  def loss_fn(params, images, labels):
    logits, new_vars = model.apply({"params": params, "batch_stats": state.batch_stats}, images,
                                   train=True, block_mask=mask, grad_route=route, mutable=["batch_stats"])
    logits = logits.astype(jnp.float32)  # a no-op in fp32; the loss of bf16 models in fp32
    return cross_entropy(logits, labels, label_smoothing), (logits, new_vars["batch_stats"])

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches == 1:
    (loss, (logits, stats)), grads = grad_fn(state.params, images, batch["label"])
  else:
    split = lambda a: a.reshape((microbatches, -1) + a.shape[1:])

    def accumulate(total, xs):
      (loss, (logits, _)), grads = grad_fn(state.params, *xs)
      return jax.tree.map(jnp.add, total, (loss, grads)), logits

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
    (loss, grads), logits = jax.lax.scan(accumulate, zeros, (split(images), split(batch["label"])))
    loss, grads = jax.tree.map(lambda a: a / microbatches, (loss, grads))
    logits, stats = logits.reshape((-1,) + logits.shape[2:]), state.batch_stats
  if mask is not None and mask.ndim == 1:  # per-example masks: every block ran, on the whole batch
    stats = model_variables.keep_stats_of_inactive_blocks(state.batch_stats, stats, mask)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            batch_stats=stats, opt_state=opt_state)
  error = jnp.mean(jnp.argmax(logits, -1) != batch["label"])
  return new_state, {"loss": loss, "error": error}


def check_microbatches(model, microbatches: int, batch_size: int, sampler=None) -> None:
  """One line when `microbatches` cannot split this batch exactly (see `train_step`)."""
  if not isinstance(microbatches, int) or microbatches < 1 or batch_size % microbatches:
    raise ValueError(f"microbatches must be a positive integer dividing the per-step batch {batch_size}, "
                     f"got {microbatches!r}")
  if microbatches > 1 and getattr(model, "batch_norm", True):
    raise ValueError(f"microbatches={microbatches} would take BatchNorm statistics over slices of the batch; "
                     f"use it only for networks without BatchNorm (e.g. the ViT)")
  if microbatches > 1 and sampler is not None:
    raise ValueError("microbatches > 1 does not combine with a training mask sampler (train_mask.kind)")


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
