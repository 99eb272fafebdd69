r"""Throughput of the single-deletion sweep (every block deleted once) on one network, three ways:

  (a) a Python loop calling one jitted apply per mask,
  (b) `lesion.evaluate`: the mask stack vmapped in one program,
  (c) `lesion.single_deletion_sweep`: the prefix-shared wavefront (n(n+1)/2 block evaluations, not n^2).

Reports masks*images per second, ratios to (a), and the fraction of fp32 peak, counting FLOPs as
2 * MACs of the residual branches actually run ((a) and (b) also run the branch a mask zeroes).
With --bn=recalibrate (or recalibrate_all) each deletion's statistics are re-estimated on 4 x 128 training
images first, (b) and (c) only (the wavefront runs each stream with its own statistics); ratios to (b).

  nice -n 10 .venv/bin/python -m benchmarks.lesion_sweep --depth=32 --images=500
  nice -n 10 .venv/bin/python -m benchmarks.lesion_sweep --workdir=<trained run> --images=500   # its test images
  nice -n 10 .venv/bin/python -m benchmarks.lesion_sweep --depth=56 --images=1000 --bn=recalibrate
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from resnet_ensembles.store import checkpoints
from resnet_ensembles.data import cifar10 as data
from resnet_ensembles.lesion import sweep as lesion
from resnet_ensembles.lesion import common as lesion_common
from resnet_ensembles.lesion import masks
from resnet_ensembles import models
from resnet_ensembles.data import for_run as study_data

_DEPTH = flags.DEFINE_integer("depth", 32, "CIFAR ResNet depth (6n+2).")
_IMAGES = flags.DEFINE_integer("images", 500, "Test images swept per mask.")
_BATCH = flags.DEFINE_integer("batch_size", 250, "Images per batch (all three methods).")
_REPEATS = flags.DEFINE_integer("repeats", 4, "Timed repetitions after a warm-up; the best is reported.")
_PEAK = flags.DEFINE_float("peak_gflops", 166.4, "fp32 peak: 2 cores x 2.6 GHz x 32 FLOP/cycle.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run (its network and test images); default: random init.")
_BUDGET = flags.DEFINE_integer("memory_budget_mb", lesion.DEFAULT_BUDGET >> 20, "Activation budget of (b), (c).")
_BN = flags.DEFINE_enum("bn", "stored", lesion.BN_MODES, "BatchNorm statistics of every lesioned network.")
RECAL = dict(recal_batches=4, recal_batch_size=128)


def best_times(runs: dict, repeats: int) -> dict:
  """Best wall and CPU seconds of each method, the methods interleaved so that load from other
  processes on a shared machine hits all of them alike (each first run compiles and is not timed)."""
  for fn in runs.values():
    fn()
  best = {name: (np.inf, np.inf) for name in runs}
  for _ in range(repeats):
    for name, fn in runs.items():
      w0, c0 = time.perf_counter(), time.process_time()
      fn()
      wall, cpu = time.perf_counter() - w0, time.process_time() - c0
      best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
  return best


def main(argv):
  del argv
  if _WORKDIR.value:
    model, v, config = checkpoints.load_trained(_WORKDIR.value)
    d = study_data.load_for_study(config, test_size=_IMAGES.value, train_size=512)
    split, recal_split, what = d["test"], d["train"], f"trained ({_WORKDIR.value})"
  else:
    model, what = models.CifarResNet(_DEPTH.value), "random init"
    v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    rng = np.random.default_rng(0)
    split = (rng.integers(0, 256, (_IMAGES.value, 32, 32, 3), dtype=np.uint8),
             rng.integers(0, 10, _IMAGES.value).astype(np.int32))
    recal_split = (rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8), np.zeros(512, np.int32))
  lay = model.layout
  n, bs, budget = lay.num_blocks, _BATCH.value, _BUDGET.value << 20
  stack, _ = masks.single_deletions(lay)
  batches = [jax.device_put(b) for b in lesion_common.batches(split, bs)]
  one = jax.jit(lambda v, m, x, y: jnp.sum(jnp.argmax(model.apply(v, data.normalize_for(model, x), block_mask=m), -1) == y))

  def loop():
    out = [one(v, m, x, y) for m in stack for x, y, _ in batches]
    jax.block_until_ready(out)

  bn = _BN.value
  full_stack = np.concatenate([stack, np.ones((1, n), np.float32)])

  def wavefront():
    stats = None
    if bn != "stored":
      stats = lesion.recalibrated_stack(model, v, full_stack, recal_split, bn=bn, memory_budget=budget, **RECAL)
      stats = jax.tree.map(lambda a: np.concatenate([a[-1:], a[:-1]]), stats)
    return lesion.single_deletion_sweep(model, v, split, batch_size=bs, memory_budget=budget, stream_stats=stats)

  runs = {"(a) loop of jitted apply": loop,
          "(b) vmapped evaluate": lambda: lesion.evaluate(
              model, v, split, stack, batch_size=bs, memory_budget=budget, bn=bn,
              **({} if bn == "stored" else dict(recal_split=recal_split, **RECAL))),
          "(c) prefix-shared sweep": wavefront}
  if bn != "stored":  # a loop has no recalibration of its own
    del runs["(a) loop of jitted apply"]
  full_macs = sum(lay.block_macs)
  macs = {"(a) loop of jitted apply": n * full_macs, "(b) vmapped evaluate": n * full_macs,
          "(c) prefix-shared sweep": sum((t + 1) * lay.block_macs[t] for t in range(n))}
  print(f"{type(model).__name__}-{getattr(model, 'depth', '?')} ({n} blocks), {n} single-deletion masks x {len(split[1])} images, batch {bs}, "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s), {what}, {bn} BatchNorm")
  base = None
  for name, (seconds, cpu) in best_times(runs, _REPEATS.value).items():
    rate = n * len(split[1]) / seconds
    base = base or rate
    gflops = 2 * macs[name] * len(split[1]) / seconds / 1e9
    print(f"{name:26s} {seconds:6.2f} s (cpu {cpu:6.2f} s) {rate:6.0f} masks*images/s  "
          f"x{rate / base:4.2f} vs {'(a)' if bn == 'stored' else '(b)'}  "
          f"{gflops:5.1f} GFLOP/s = {100 * gflops / _PEAK.value:4.1f}% of peak "
          f"(block work {macs[name] / (n * full_macs):.2f} of n^2)")

if __name__ == "__main__":
  app.run(main)
