r"""Should a training mask skip the blocks it drops (lax.cond) instead of multiplying them by 0? (not a test)

  ./run.sh python -m benchmarks.skip_dropped_blocks

Stochastic depth and forward short-path training draw one traced 0/1 per block and mini-batch. The
models multiply the branch by it, so a dropped block still costs its compute. `CondResNet` instead wraps
each branch in `nn.cond(mask > 0, ...)`, which could save the dropped blocks' FLOPs. This times one
ResNet-20 training gradient (batch 64, fp32) both ways, checks that they agree, and prints the ratio.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.conv_forms import best_of
from resnet_ensembles import models


class CondResNet(models.CifarResNet):
  """CifarResNet whose training-time scalar masks skip dropped branches with nn.cond."""

  def block(self, x, pos, train=False, mask=None, route=None, order=None, path_groups=0):
    if not (train and mask is not None and not self.is_initializing()):
      return super().block(x, pos, train, mask, route, order, path_groups)
    shortcut = self.shortcut(x, pos, train)
    branch = nn.cond(mask > 0, lambda mdl, x, s: mdl(x, True), lambda mdl, x, s: jnp.zeros_like(s),
                     getattr(self, f"block_{pos:02d}"), x, shortcut)
    return self._post(shortcut + mask * branch)


def gradient_fn(model, v, x, y):
  def loss(params, mask):
    logits, _ = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True, block_mask=mask,
                            mutable=["batch_stats"])
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])
  return jax.jit(jax.value_and_grad(loss))


def main():
  x = jax.random.normal(jax.random.PRNGKey(1), (64, 32, 32, 3))
  y = jnp.arange(64) % 10
  base = models.CifarResNet(20)
  v = base.init(jax.random.PRNGKey(0), x[:1])
  mask = jnp.array([1, 0, 1, 1, 0, 0, 1, 0, 1], jnp.float32)  # 5 of 9 blocks dropped
  multiply, cond = gradient_fn(base, v, x, y), gradient_fn(CondResNet(20), v, x, y)
  for a, b in zip(jax.tree.leaves(multiply(v["params"], mask)), jax.tree.leaves(cond(v["params"], mask))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  t_mul, t_cond = best_of(multiply, v["params"], mask), best_of(cond, v["params"], mask)
  print(f"ResNet-20 training gradient, 4 of 9 blocks active: multiply-by-mask {1e3 * t_mul:.0f} ms, "
        f"nn.cond skip {1e3 * t_cond:.0f} ms -> cond is {t_mul / t_cond:.2f}x the speed of multiplying")


if __name__ == "__main__":
  main()
