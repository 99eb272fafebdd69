"""Full ResNet-32: BN recalibrated on augmented (pad-crop + flip, as in training) vs un-augmented images."""
import json, time
import jax, jax.numpy as jnp
import numpy as np
from resnet_ensembles.store import checkpoints
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion import sweep as lesion
from resnet_ensembles.data import for_run as study_data
from resnet_ensembles.lesion.sweep import BN_MOMENTUM
model, variables, config = checkpoints.load_trained("/work/runs/repro/train/resnet")
data = study_data.load_for_study(config, test_size=0)
n = model.layout.num_blocks
full = np.ones((1, n), np.float32)

@jax.jit
def batch_stats(x):
  zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
  _, new = model.apply({"params": variables["params"], "batch_stats": zeros}, x, train=True, mutable=["batch_stats"])
  return new["batch_stats"]

out = {}
for aug in (False, True):
  for nb in (4, 16, 64):
    rx, _ = data_lib.subset(data["train"], nb * 128, 0)
    total = None
    for i in range(nb):
      imgs = jnp.asarray(rx[i * 128:(i + 1) * 128])
      x = data_lib.augment(jax.random.fold_in(jax.random.PRNGKey(0), i), imgs) if aug else data_lib.normalize(imgs)
      s = batch_stats(x)
      total = s if total is None else jax.tree.map(jnp.add, total, s)
    stats = jax.tree.map(lambda t: t / (nb * (1 - BN_MOMENTUM)), total)
    e = float(lesion.evaluate(model, {"params": variables["params"], "batch_stats": stats}, data["test"], full)["error"][0])
    out[f"{'aug' if aug else 'plain'}_{nb}x128"] = e
    print("augmented" if aug else "un-augmented", nb, e, flush=True)
json.dump(out, open("/work/runs/recal_check/augmented.json", "w"), indent=1)
