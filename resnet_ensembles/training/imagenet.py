"""train_and_evaluate for ImageNet configs: host-streamed batches through the same loop and train_step.

ImageNet does not fit in host memory as CIFAR-10 does, so every process decodes and augments only its
share of the split with tf.data (`imagenet_data`), and `sharding.global_batch` assembles the global batch
from the shares; normalisation (in the model's dtype) is the on-device `preprocess`. Everything else —
optimizer, schedule, mask samplers, orbax checkpoints, metrics, resume — is `loop.fit`.

Epochs are counted in steps (split size // global batch), as in the Flax ImageNet example. A resumed
run restarts the stream with a seed derived from its start step, so the batches are reproducible given
the points where the run was stopped, without reading through the data already seen.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from resnet_ensembles.data import imagenet as imagenet_data
from resnet_ensembles.models import imagenet as imagenet_models
from resnet_ensembles.models import samplers
from resnet_ensembles.training import loop, steps
from resnet_ensembles.parallel.mesh import data_mesh, global_batch, process_rows


def validate_config(config) -> None:
  """Clear one-line errors before any data is read or anything compiles."""
  imagenet_models.build_from_config(config)  # depth / variant / name
  if config.batch_size < 1 or config.batch_size % jax.device_count():
    raise ValueError(f"batch_size {config.batch_size} is not a positive multiple of {jax.device_count()} devices")
  if config.eval_batch_size < 1 or config.eval_batch_size % jax.device_count():
    raise ValueError(f"eval_batch_size {config.eval_batch_size} is not a positive multiple of "
                     f"{jax.device_count()} devices")
  if config.num_epochs < 1:
    raise ValueError(f"num_epochs must be >= 1, got {config.num_epochs}")
  if config.data.image_size < 32:
    raise ValueError(f"data.image_size must be >= 32 (five stride-2 stages), got {config.data.image_size}")
  samplers.make_sampler(config.train_mask, imagenet_models.imagenet_layout(config.model.depth, config.model.width),
                        config.batch_size)


def eval_step(variables, batch: dict, block_mask=None, *, model, top: int) -> dict:
  """Weighted sums of top-1 and top-`top` mistakes and of the loss (padding rows weigh 0); `block_mask`:
  the test-time branch scales of a network trained with masks (stochastic depth's p_l)."""
  logits = model.apply(variables, imagenet_data.normalize(batch["image"], model.dtype), train=False,
                       block_mask=block_mask)
  logits = logits.astype(jnp.float32)
  labels, w = batch["label"], batch["weight"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  in_top = jnp.any(jax.lax.top_k(logits, top)[1] == labels[:, None], axis=-1)
  return {"wrong": jnp.sum((jnp.argmax(logits, -1) != labels) * w), "wrong_top": jnp.sum(~in_top * w),
          "loss": jnp.sum(losses * w), "count": jnp.sum(w)}


def evaluate(variables, config, *, model, mesh) -> dict:
  """Top-1 (and top-5 where there are more than 5 classes) error and loss over the eval split."""
  top = min(5, config.model.num_classes)
  rows = process_rows(mesh, config.eval_batch_size)
  program = steps.eval_program(eval_step, model, mesh, top=top)
  test_mask = samplers.test_time_mask(config.train_mask, model.layout)
  fn = lambda v, batch: program(v, batch, test_mask)
  totals = {"wrong": 0.0, "wrong_top": 0.0, "loss": 0.0, "count": 0.0}
  for local in imagenet_data.eval_batches(config.data, config.data.eval_split, rows.stop - rows.start,
                                          image_size=config.data.image_size):
    out = fn(variables, global_batch(local, mesh, config.eval_batch_size))
    for k in totals:
      totals[k] += float(out[k])
  result = {"test_error": totals["wrong"] / totals["count"], "test_loss": totals["loss"] / totals["count"]}
  if top > 1:
    result[f"test_top{top}_error"] = totals["wrong_top"] / totals["count"]
  return result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, data=None) -> dict:
  """Trains an `experiments/configs/imagenet.py` config (resuming in `workdir`); returns the final metrics."""
  if data is not None:
    raise ValueError("ImageNet configs stream their data (config.data); `data` is for CIFAR-10 arrays")
  validate_config(config)
  model = imagenet_models.build_from_config(config)
  mesh = data_mesh()
  d = config.data
  steps_per_epoch = imagenet_data.num_examples(d, d.train_split) // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"the {d.train_split!r} split holds fewer images than one batch ({config.batch_size})")
  rows = process_rows(mesh, config.batch_size)

  def batches(start_step: int):
    stream = imagenet_data.train_batches(d, d.train_split, rows.stop - rows.start,
                                         seed=config.seed * 1_000_003 + start_step, image_size=d.image_size,
                                         shuffle_buffer=d.shuffle_buffer)
    for local in stream:
      yield global_batch(local, mesh, config.batch_size)

  preprocess = lambda key, images: imagenet_data.normalize(images, model.dtype)
  return loop.fit(config, workdir, model=model, mesh=mesh, steps_per_epoch=steps_per_epoch, batches=batches,
                   evaluate_fn=lambda v: evaluate(v, config, model=model, mesh=mesh), preprocess=preprocess,
                   image_size=d.image_size)
