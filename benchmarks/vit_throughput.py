r"""Training throughput of the ViT sizes of experiments/configs/vit.py on this machine (not a test).

  ./run.sh python -m benchmarks.vit_throughput                      # s4, s6, s8 and ResNet-32 for scale
  ./run.sh python -m benchmarks.vit_throughput --sizes=s6 --steps=5
  ./run.sh python -m benchmarks.vit_throughput --sizes=s6,resnet32 --microbatches=1,2,4,8

Runs the real `train_step` (AdamW, label smoothing, augmentation) on random uint8 batches in one process,
one size after another, and prints images/s, the multiply-adds per image it assumes and each size's ratio
to the first one measured in the same run. `--microbatches` measures each ViT size at each count
(`train_step(microbatches=M)`: the same step in M slices; the ResNet, with BatchNorm, only at 1) (on a shared machine absolute numbers move with the load; the
ratios measured back to back move less), plus how many epochs fit in `--hours`.
"""
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments.configs import cifar10, vit as vit_configs
from resnet_ensembles import models
from resnet_ensembles.models.layout import forward_macs
from resnet_ensembles.training import schedules, steps

_SIZES = flags.DEFINE_list("sizes", ["s4", "s6", "s8", "resnet32"], "ViT sizes (and/or resnet32 for scale).")
_STEPS = flags.DEFINE_integer("steps", 4, "Timed training steps after the compiling one.")
_MICRO = flags.DEFINE_list("microbatches", ["1"], "Microbatch counts per ViT size (train_step microbatches).")
_HOURS = flags.DEFINE_float("hours", 4.0, "Budget for the epochs-per-budget column.")


def vit_macs(model) -> int:
  """Multiply-adds of one forward pass: patch embedding, the blocks, the head."""
  return model.tokens * model.patch ** 2 * 3 * model.width + sum(model.layout.block_macs) + model.width * 10


def measure(size: str, num_steps: int, microbatches: int = 1) -> dict:
  config = cifar10.get_config(size) if size.startswith("resnet") else vit_configs.get_config(size)
  model = models.from_config(config)
  macs = forward_macs(config.model.depth) if size.startswith("resnet") else vit_macs(model)
  tx = schedules.make_optimizer(config, schedules.learning_rate_fn(config, 390))
  state = steps.create_state(config, model, tx, jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, sampler=None,
                                   label_smoothing=config.get("label_smoothing", 0.0), microbatches=microbatches),
                 donate_argnums=0)
  rng, bs = np.random.default_rng(0), config.batch_size
  batch = {"image": jnp.asarray(rng.integers(0, 256, (bs, 32, 32, 3), dtype=np.uint8)),
           "label": jnp.asarray(rng.integers(0, 10, bs).astype(np.int32))}
  key = jax.random.PRNGKey(1)
  state, m = step(state, batch, key)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(num_steps):
    state, m = step(state, batch, key)
  jax.block_until_ready(m)
  params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
  if microbatches > 1:
    size = f"{size}/{microbatches}"
  return dict(size=size, ips=num_steps * bs / (time.perf_counter() - t), macs=macs, params=params)


def main(argv):
  del argv
  rows = [measure(s, _STEPS.value, m) for s in _SIZES.value
          for m in ([1] if s.startswith("resnet") else [int(v) for v in _MICRO.value])]
  base = rows[0]["ips"]
  print(f"{'size/mb':>9} {'params':>9} {'fwd MMAC':>9} {'train img/s':>12} {'ratio':>6} {'epochs in %gh' % _HOURS.value:>12}")
  for r in rows:
    epochs = r["ips"] * 3600 * _HOURS.value / 50000
    print(f"{r['size']:>9} {r['params']:>9,} {r['macs'] / 1e6:>9.1f} {r['ips']:>12.1f} {r['ips'] / base:>6.2f} "
          f"{epochs:>12.1f}")
  print("(one process, sizes measured back to back on a shared machine: compare the ratios)")


if __name__ == "__main__":
  app.run(main)
