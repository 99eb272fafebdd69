"""Why re-estimating every BatchNorm statistic shifts an intact network (experiments/bn_shift.py): its test error
with the stored statistics against statistics re-estimated in training mode on K batches of B training images,
un-augmented or with the training augmentation (4-pixel pad-crop + flip), at batch sizes 128 and 32 over the same
2,560 images; and per stage, the median over channels of re-estimated / stored variance. Test images:
`test_images` drawn with `data.subset(..., seed=1)` (the depth series' k-deletion images), or all with 0.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion.batchnorm import BN_MOMENTUM
from resnet_ensembles.lesion.common import batches
from resnet_ensembles.store import checkpoints

SETTINGS = [(4, 128, False), (20, 128, False), (20, 128, True), (80, 32, False)]


def measure(path: str, data: dict, test_images: int = 0) -> dict:
  """The intact network's test error under stored and re-estimated statistics, and the variance ratios."""
  t0 = time.time()
  model, v, _ = checkpoints.load_trained(path)
  data = dict(data)
  data["test"] = data_lib.subset(data["test"], int(test_images), 1)
  zeros = jax.tree.map(jnp.zeros_like, v["batch_stats"])
  batch_stats = jax.jit(lambda x: model.apply({"params": v["params"], "batch_stats": zeros}, x, train=True,
                                              mutable=["batch_stats"])[1]["batch_stats"])
  sets, names = [v["batch_stats"]], ["stored"]
  for k, b, aug in SETTINGS:
    rx, _ = data_lib.subset(data["train"], k * b, 0)
    total = zeros
    for i in range(k):
      imgs = jnp.asarray(rx[i * b:(i + 1) * b])
      x = (data_lib.augment(jax.random.fold_in(jax.random.PRNGKey(0), i), imgs, stats=model.input_stats) if aug
           else data_lib.normalize_for(model, imgs))
      total = jax.tree.map(jnp.add, total, batch_stats(x))
    sets.append(jax.tree.map(lambda t: t / (k * (1 - BN_MOMENTUM)), total))
    names.append(f"all re-estimated, {k} x {b}{' augmented' if aug else ''}")
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *sets)
  hits = jax.jit(jax.vmap(lambda s, x, y, w: jnp.sum((jnp.argmax(model.apply(
      {"params": v["params"], "batch_stats": s}, data_lib.normalize_for(model, x)), -1) == y) * w),
      in_axes=(0, None, None, None)))
  correct = sum(np.asarray(hits(stacked, x, y, w)) for x, y, w in batches(data["test"], 500))
  errors = 1 - correct / len(data["test"][1])
  lay = model.layout
  ratios = {}
  for name, s in zip(names[1:], sets[1:]):
    per_stage = {}
    for st in range(lay.num_stages):
      r = [np.asarray(s[f"block_{i:02d}"][bn]["var"] / v["batch_stats"][f"block_{i:02d}"][bn]["var"])
           for i in lay.stage_blocks(st) for bn in ("bn1", "bn2")]
      per_stage[f"stage {st}"] = float(np.median(np.concatenate(r)))
    if "head_bn" in s:
      per_stage["head"] = float(np.median(np.asarray(s["head_bn"]["var"] / v["batch_stats"]["head_bn"]["var"])))
    ratios[name] = per_stage
  result = {"network": path, "test_images": int(len(data["test"][1])), "test_subset_seed": 1, "train_subset_seed": 0,
            "error": dict(zip(names, map(float, errors))), "median_var_ratio": ratios, "wall_s": time.time() - t0}
  return result

