"""Learning-rate schedules and the optimizer: the paper's step schedule (with He et al.'s constant warm-up
for ResNet-110) or a cosine decay after a linear warm-up; SGD with torch-style coupled weight decay (the
default), or AdamW (`optimizer: adamw`, decoupled decay on weight matrices only, as transformers train)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adamw")


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
  kind = config.get("optimizer", "sgd")
  if kind not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
  if kind == "sgd":
    # Torch-style coupled weight decay (added to the gradient before momentum), as in the authors' code.
    return optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.sgd(lr_fn, momentum=config.momentum))
  # Weight matrices and kernels only: biases, LayerNorm scales and position embeddings are not decayed.
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim >= 2 and "pos_embed" not in jax.tree_util.keystr(path), params)
  adamw = optax.adamw(lr_fn, b1=config.get("beta1", 0.9), b2=config.get("beta2", 0.999),
                      weight_decay=config.weight_decay, mask=decay_mask)
  clip = config.get("grad_clip_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), adamw) if clip else adamw
