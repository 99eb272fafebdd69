r"""A whole ResNet-20 training step in NHWC and in NCHW, alternating (not a test).

  ./run.sh python -m benchmarks.layout_step

benchmarks/conv_forms.py found single 3x3 convolutions slightly faster in NCHW on this CPU; this checks
whether a whole network gains. Pure JAX, so both layouts run the same arithmetic: pre-activation blocks,
batch-statistics BatchNorm, type-A shortcuts, batch 128, fp32. Prints each step time and the ratio.
"""
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.conv_forms import best_of

BATCH = 128


def make_net(layout: str):
  """A ResNet-20 forward pass in `layout` ("NHWC" or "NCHW"); inputs arrive NHWC."""
  c_axis = 3 if layout == "NHWC" else 1
  spatial = (1, 2) if layout == "NHWC" else (2, 3)
  reduce_axes = tuple(a for a in range(4) if a != c_axis)
  per_channel = lambda v: v.reshape([-1 if a == c_axis else 1 for a in range(4)])

  def conv(x, w, stride):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)),
                                        dimension_numbers=(layout, "HWIO", layout))

  def bn(x, scale, bias):
    mean = x.mean(reduce_axes, keepdims=True)
    var = ((x - mean) ** 2).mean(reduce_axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * per_channel(scale) + per_channel(bias)

  def shortcut(x, features, stride):
    if stride > 1:
      x = x[:, ::2, ::2, :] if layout == "NHWC" else x[:, :, ::2, ::2]
    pad = [(0, 0)] * 4
    pad[c_axis] = (0, features - x.shape[c_axis])
    return jnp.pad(x, pad)

  def net(params, x, strides):
    if layout == "NCHW":
      x = jnp.transpose(x, (0, 3, 1, 2))
    h = conv(x, params["stem"], 1)
    for (w1, w2, s1, b1, s2, b2), stride in zip(params["blocks"], strides):
      r = conv(jax.nn.relu(bn(h, s1, b1)), w1, stride)
      r = conv(jax.nn.relu(bn(r, s2, b2)), w2, 1)
      h = shortcut(h, w2.shape[-1], stride) + r
    return jax.nn.relu(h).mean(spatial) @ params["head"]
  return net


def init(rng):
  blocks, strides, c_in = [], [], 16
  for stage, features in enumerate((16, 32, 64)):
    for i in range(3):
      w = lambda cin, cout: jnp.asarray(rng.standard_normal((3, 3, cin, cout)) * 0.1, jnp.float32)
      blocks.append((w(c_in, features), w(features, features), jnp.ones(c_in), jnp.zeros(c_in),
                     jnp.ones(features), jnp.zeros(features)))
      strides.append(2 if stage > 0 and i == 0 else 1)
      c_in = features
  params = {"stem": jnp.asarray(rng.standard_normal((3, 3, 3, 16)) * 0.1, jnp.float32), "blocks": blocks,
            "head": jnp.asarray(rng.standard_normal((64, 10)) * 0.1, jnp.float32)}
  return params, tuple(strides)


def main():
  rng = np.random.default_rng(0)
  params, strides = init(rng)
  x = jnp.asarray(rng.standard_normal((BATCH, 32, 32, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, BATCH))
  best = {}
  for layout in ("NHWC", "NCHW", "NHWC", "NCHW"):
    net = make_net(layout)
    loss = lambda p: -jnp.mean(jax.nn.log_softmax(net(p, x, strides))[jnp.arange(BATCH), y])
    t = best_of(jax.jit(jax.value_and_grad(loss)), params, reps=6)
    best.setdefault(layout, []).append(t)
    print(f"{layout} train step {1e3 * t:.1f} ms -> {BATCH / t:.0f} img/s", flush=True)
  print(f"NCHW / NHWC speed: {min(best['NHWC']) / min(best['NCHW']):.2f}x")


if __name__ == "__main__":
  main()
