r"""One 3x3 convolution of the CIFAR ResNets in four forms, forward and forward+backward (not a test).

  ./run.sh python -m benchmarks.conv_forms

Forms: XLA's convolution in NHWC (what the models use), the same in NCHW/OIHW, im2col by nine shifted
slices + one matmul, and im2col by `lax.conv_general_dilated_patches` + matmul. Batch 128, fp32, the
three stage shapes (32x32x16, 16x16x32, 8x8x64). Prints the best of 5 timings and each form's ratio to
NHWC measured in the same run (>1: faster). Stop other CPU work first.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

DN = ("NHWC", "HWIO", "NHWC")


def nhwc(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)


def nchw(x, w):  # inputs stay NHWC/HWIO so every form gets the same arguments; transposes are part of it
  y = jax.lax.conv_general_dilated(jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1)), (1, 1),
                                   ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW"))
  return jnp.transpose(y, (0, 2, 3, 1))


def im2col_slices(x, w):
  n, h, wd, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  cols = jnp.concatenate([xp[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)], axis=-1)
  return jnp.dot(cols.reshape(-1, 9 * c), w.reshape(9 * c, -1)).reshape(n, h, wd, -1)


def im2col_patches(x, w):
  n, h, wd, c = x.shape
  p = jax.lax.conv_general_dilated_patches(x, (3, 3), (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)
  wk = jnp.transpose(w, (2, 0, 1, 3)).reshape(9 * c, -1)  # patch features are channel-major
  return jnp.dot(p.reshape(-1, 9 * c), wk).reshape(n, h, wd, -1)


FORMS = {"nhwc": nhwc, "nchw": nchw, "im2col_slices": im2col_slices, "im2col_patches": im2col_patches}


def best_of(fn, *args, reps: int = 5) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return min(times)


def main():
  rng = np.random.default_rng(0)
  for hw, c in [(32, 16), (16, 32), (8, 64)]:
    x = jnp.asarray(rng.standard_normal((128, hw, hw, c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, c, c)) * 0.1, jnp.float32)
    ref, res = nhwc(x, w), {}
    for name, f in FORMS.items():
      np.testing.assert_allclose(f(x, w), ref, rtol=1e-3, atol=1e-3)
      grad = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(f(x, w) ** 2), argnums=(0, 1)))
      res[name] = (best_of(jax.jit(f), x, w), best_of(grad, x, w))
    base = res["nhwc"]
    for name, (fwd, train) in res.items():
      print(f"{hw:2d}x{hw:<2d}x{c:<2d} {name:15s} fwd {1e3 * fwd:7.1f} ms ({base[0] / fwd:4.2f}x)   "
            f"fwd+bwd {1e3 * train:7.1f} ms ({base[1] / train:4.2f}x)", flush=True)


if __name__ == "__main__":
  main()
