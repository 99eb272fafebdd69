import jax, jax.numpy as jnp, numpy as np
from resnet_ensembles.store import checkpoints
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.data import for_run as study_data
model, variables, config = checkpoints.load_trained("/work/runs/repro/train/resnet")
data = study_data.load_for_study(config, test_size=0)
print(config.train_mask if "train_mask" in config else None)
@jax.jit
def batch_stats(x):
  zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
  _, new = model.apply({"params": variables["params"], "batch_stats": zeros}, x, train=True, mutable=["batch_stats"])
  return new["batch_stats"]
nb = 32
rx, _ = data_lib.subset(data["train"], nb * 128, 0)
total = None
for i in range(nb):
  x = data_lib.augment(jax.random.fold_in(jax.random.PRNGKey(0), i), jnp.asarray(rx[i * 128:(i + 1) * 128]))
  s = batch_stats(x); total = s if total is None else jax.tree.map(jnp.add, total, s)
stats = jax.tree.map(lambda t: np.asarray(t) / (nb * 0.1), total)
flat_s = jax.tree_util.tree_flatten_with_path(variables["batch_stats"])[0]
flat_r = jax.tree.leaves(stats)
for (path, a), b in zip(flat_s, flat_r):
  a = np.asarray(a)
  name = "/".join(str(getattr(p, "key", p)) for p in path)
  if name.endswith("var"):
    print(f"{name:40s} var ratio recal/stored: median {np.median(b / a):.3f}  min {np.min(b/a):.3f} max {np.max(b/a):.3f}")
  else:
    print(f"{name:40s} mean diff / sqrt(stored var) n/a  |diff| median {np.median(np.abs(b - a)):.4f}  |stored| median {np.median(np.abs(a)):.4f}")
