"""A hand-built forward pass for tests only: applies each block's stored variables one by one, so
model behaviour (deletions, orders) can be checked against an independent construction."""
import jax.numpy as jnp
import flax.linen as nn

from resnet_ensembles.models.cifar import ResidualBranch, type_a_shortcut


def reference_forward(model, variables, x, deleted=(), order=None):
  p, s = variables["params"], variables["batch_stats"]
  lay = model.layout
  bn = lambda name, h: nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5).apply(
      {"params": p[name], "batch_stats": s[name]}, h)
  h = nn.Conv(model.width, (3, 3), padding=1, use_bias=False).apply({"params": p["stem_conv"]}, x)
  if model.variant == "original":
    h = nn.relu(bn("stem_bn", h))
  for pos in range(lay.num_blocks):
    blk = pos if order is None else int(order[pos])
    name = f"block_{blk:02d}"
    sc = type_a_shortcut(h, lay.block_features[pos], lay.block_strides[pos])
    if pos in deleted:
      h = sc
      continue
    f = ResidualBranch(lay.block_features[pos], lay.block_strides[pos], model.variant).apply(
        {"params": p[name], "batch_stats": s[name]}, h, train=False)
    if model.residual:
      h = sc + f
    else:
      h = f
    if model.variant == "original":
      h = nn.relu(h)
  if model.variant == "preact":
    h = nn.relu(bn("head_bn", h))
  h = jnp.mean(h, axis=(1, 2))
  return nn.Dense(model.num_classes).apply({"params": p["head"]}, h)
