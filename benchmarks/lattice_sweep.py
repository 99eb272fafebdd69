r"""The complete lesion lattice two ways, on the same images in one run, and their ratio:

  (a) per mask from the input: `lattice.mask_values`, the 2^k masks vmapped (16 networks per program call);
  (b) the prefix-shared trie: `lattice.lattice_sweep` (2^k - 1 branch evaluations plus the blocks outside
      the lattice on the streams that reach them, instead of 2^k x n).

Each method runs once on one batch to compile, then once timed (wall and process CPU seconds); both results
are compared (they agree to float rounding).

  nice -n 5 .venv/bin/python -m benchmarks.lattice_sweep --branches=10 --images=32
  nice -n 5 .venv/bin/python -m benchmarks.lattice_sweep --workdir=results/repro/train/resnet --branches=10
"""
import time

import jax
import numpy as np
from absl import app, flags

from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion import lattice
from resnet_ensembles.store import checkpoints

_DEPTH = flags.DEFINE_integer("depth", 32, "CIFAR ResNet depth (random init) when no --workdir.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run (any family); default: a random-init ResNet.")
_BRANCHES = flags.DEFINE_integer("branches", 10, "Lattice size k: the first k non-opener blocks (or blocks).")
_IMAGES = flags.DEFINE_integer("images", 32, "Images per network (random pixels; the timing does not care).")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Images per program call, both methods.")
_BUDGET = flags.DEFINE_integer("memory_budget_mb", 512, "Activation budget of the trie.")


def timed(fn):
  w0, c0 = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv):
  del argv
  if _WORKDIR.value:
    model, v, _ = checkpoints.load_trained(_WORKDIR.value)
  else:
    model = models.CifarResNet(depth=_DEPTH.value)
    v = models.init_variables(model, jax.random.key(0))
  layout = model.layout
  pool = layout.deletable_blocks if len(layout.deletable_blocks) >= _BRANCHES.value else range(layout.num_blocks)
  positions = tuple(pool[:_BRANCHES.value])
  rng = np.random.default_rng(0)
  split = (rng.integers(0, 256, (_IMAGES.value, 32, 32, 3), dtype=np.uint8),
           rng.integers(0, model.num_classes, _IMAGES.value).astype(np.int32))
  warm = (split[0][:_BATCH.value], split[1][:_BATCH.value])
  masks = lattice.mask_table(layout.num_blocks, positions)
  per_mask = lambda s: lattice.mask_values(model, v, s, masks, batch_size=_BATCH.value)
  trie = lambda s: lattice.lattice_sweep(model, v, s, positions, batch_size=_BATCH.value,
                                         memory_budget=_BUDGET.value << 20)
  per_mask(warm)
  trie(warm)
  a, wall_a, cpu_a = timed(lambda: per_mask(split))
  b, wall_b, cpu_b = timed(lambda: trie(split))
  trie_evals, mask_evals = lattice.block_evaluations(layout.num_blocks, positions)
  print(f"{type(model).__name__} ({layout.num_blocks} blocks), lattice over blocks {list(positions)}: "
        f"{len(masks)} networks x {_IMAGES.value} images; trie cut at {b['levels']} levels, batch {b['batch_size']}")
  print(f"  (a) per mask from the input: {wall_a:8.2f} s wall, {cpu_a:8.2f} s cpu")
  print(f"  (b) prefix-shared trie:      {wall_b:8.2f} s wall, {cpu_b:8.2f} s cpu")
  print(f"  ratio (a)/(b): {wall_a / wall_b:.2f}x wall, {cpu_a / cpu_b:.2f}x cpu; branch evaluations "
        f"{mask_evals} / {trie_evals} = {mask_evals / trie_evals:.2f}x (k/2 = {len(positions) / 2:.1f} if per-mask "
        f"evaluation skipped deleted branches)")
  print(f"  max |loss difference| {np.max(np.abs(a['loss'] - b['loss'])):.2e}, "
        f"errors equal: {bool(np.array_equal(a['error'], b['error']))}")


if __name__ == "__main__":
  app.run(main)
