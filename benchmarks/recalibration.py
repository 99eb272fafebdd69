r"""Downstream BatchNorm recalibration of a stack of lesions, two programs (same statistics, tested equal):

  (a) each lesion on its own, vmapped (`batchnorm.recalibrated_stats`): every position runs twice per lesion,
      with the stored statistics and in training mode, and the lesion's stream takes the one it needs;
  (b) `batchnorm.recalibrated_stats_stack`: the deployed network's pass over each batch runs once for the
      stack (the prefix every lesion shares), and each lesion one training-mode pass per position.

Prints the best wall time of each (interleaved) and the ratio, measured in one run.

  nice -n 10 .venv/bin/python -m benchmarks.recalibration --depth=56 --lesions=16
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from resnet_ensembles import models
from resnet_ensembles.lesion import batchnorm, masks

_DEPTH = flags.DEFINE_integer("depth", 32, "CIFAR ResNet depth (6n+2).")
_LESIONS = flags.DEFINE_integer("lesions", 16, "Random k-deletions in the stack (k = 1, 2, ... in turn).")
_BATCHES = flags.DEFINE_integer("batches", 4, "Recalibration batches.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Images per recalibration batch.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions after a warm-up; the best is reported.")


def main(argv):
  del argv
  model = models.CifarResNet(_DEPTH.value)
  v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  lay, n = model.layout, model.layout.num_blocks
  deletable = n - len(lay.stage_openers)
  ks = [1 + i % deletable for i in range(_LESIONS.value)]
  stack = np.concatenate([masks.random_deletions(lay, 1, seed=i, ks=[k])[0] for i, k in enumerate(ks)])
  images = np.random.default_rng(0).integers(0, 256, (_BATCHES.value, _BATCH.value, 32, 32, 3), dtype=np.uint8)
  scale = jnp.ones(n)
  alone = jax.jit(jax.vmap(lambda m: batchnorm.recalibrated_stats(model, v, m, None, images,
                                                                  batchnorm.first_change(m, None, n))))
  shared = jax.jit(lambda m: batchnorm.recalibrated_stats_stack(model, v, m, None, images, scale))
  runs = {"(a) each lesion alone": lambda: jax.block_until_ready(alone(stack)),
          "(b) shared prefix pass": lambda: jax.block_until_ready(shared(stack))}
  for fn in runs.values():
    fn()
  best = {name: np.inf for name in runs}
  for _ in range(_REPEATS.value):
    for name, fn in runs.items():
      t0 = time.perf_counter()
      fn()
      best[name] = min(best[name], time.perf_counter() - t0)
  print(f"CifarResNet-{_DEPTH.value} ({n} blocks), {len(stack)} lesions, {_BATCHES.value} x {_BATCH.value} images, "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)")
  base = best["(a) each lesion alone"]
  for name, seconds in best.items():
    print(f"{name:24s} {seconds:7.2f} s   x{base / seconds:4.2f} vs (a)")


if __name__ == "__main__":
  app.run(main)
