r"""Training and evaluation throughput on this machine, and the attempts to raise it (not a test).

  ./run.sh python -m benchmarks.train_throughput                 # depths 20, 56, 110; every attempt
  ./run.sh python -m benchmarks.train_throughput --depths=20 --attempts=baseline,bf16

Each measurement runs in its own subprocess (XLA flags must be set before JAX starts), on random uint8
images through the real `train_step` (augmentation included) and eval step. It prints images/s, the
FLOPs it assumes per image (forward = 2 x multiply-adds of `layout.forward_macs`; training = 3 x forward)
and the fraction of the fp32 peak (2 AVX-512 cores x 2.6 GHz x 2 FMA x 8 lanes x 2 = 166 GFLOP/s), plus
each attempt's ratio to the baseline measured in the same run. Stop other CPU work first.
"""
import json
import os
import subprocess
import sys
import time

from absl import app, flags

PEAK_FLOPS = 2 * 2.6e9 * 2 * 8 * 2  # cores x Hz x FMA units x fp32 lanes (256-bit) x 2 FLOP = 166.4e9

ATTEMPTS = {  # name: (config overrides, XLA_FLAGS)
    "baseline": ({}, ""),
    "bf16": ({"dtype": "bfloat16"}, ""),
    "batch32": ({"batch_size": 32}, ""),
    "batch64": ({"batch_size": 64}, ""),
    "conv_chunk8": ({"conv_chunk": 8}, ""),
    "conv_chunk16": ({"conv_chunk": 16}, ""),   # the same batch of 128; convolutions 16 images at a time
    "conv_chunk32": ({"conv_chunk": 32}, ""),
    "onednn": ({}, "--xla_cpu_use_onednn=true"),
    "xnnpack": ({}, "--xla_cpu_use_xnnpack=true"),
    "vector512": ({}, "--xla_cpu_prefer_vector_width=512"),
    "fast_math": ({}, "--xla_cpu_enable_fast_math=true"),
}

_DEPTHS = flags.DEFINE_list("depths", ["20", "56", "110"], "CIFAR depths to measure.")
_MODELS = flags.DEFINE_list("models", ["resnet", "plain"], "resnet and/or plain.")
_ATTEMPTS = flags.DEFINE_list("attempts", list(ATTEMPTS), f"Subset of {list(ATTEMPTS)}.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed training steps after the compiling one.")
_EVAL_IMAGES = flags.DEFINE_integer("eval_images", 2000, "Images per timed evaluation pass.")
_ATTEMPT_DEPTHS = flags.DEFINE_list("attempt_depths", ["20"], "Depths on which non-baseline attempts run.")

_CHILD = r"""
import functools, json, sys, time
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, {root!r})
from experiments.configs import cifar10
from resnet_ensembles import models
from resnet_ensembles.training import schedules, steps
c = cifar10.get_config({arch!r})
c.model.dtype = {overrides!r}.get("dtype", "float32")
c.model.conv_chunk = {overrides!r}.get("conv_chunk", 0)
bs = {overrides!r}.get("batch_size", 128)
model = models.from_config(c)
tx = schedules.make_optimizer(c, schedules.learning_rate_fn(c, 100))
state = steps.create_state(c, model, tx, jax.random.PRNGKey(0))
step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, sampler=None), donate_argnums=0)
rng = np.random.default_rng(0)
batch = {{"image": jnp.asarray(rng.integers(0, 256, (bs, 32, 32, 3), dtype=np.uint8)),
          "label": jnp.asarray(rng.integers(0, 10, bs).astype(np.int32))}}
key = jax.random.PRNGKey(1)
t = time.perf_counter(); lowered = step.lower(state, batch, key); compiled = lowered.compile()
compile_s = time.perf_counter() - t
state, m = compiled(state, batch, key); jax.block_until_ready(m)
t = time.perf_counter()
for _ in range({steps}):
  state, m = compiled(state, batch, key)
jax.block_until_ready(m)
train_ips = {steps} * bs / (time.perf_counter() - t)
variables = {{"params": state.params, "batch_stats": state.batch_stats}}
ev = jax.jit(lambda v, x: model.apply(v, x))
x = jnp.asarray(rng.standard_normal((500, 32, 32, 3)), c.model.dtype)
jax.block_until_ready(ev(variables, x))
t = time.perf_counter()
for _ in range(max(1, {eval_images} // 500)):
  out = ev(variables, x)
jax.block_until_ready(out)
eval_ips = max(1, {eval_images} // 500) * 500 / (time.perf_counter() - t)
print("RESULT", json.dumps(dict(train_ips=train_ips, eval_ips=eval_ips, compile_s=compile_s)))
"""


def measure(arch: str, attempt: str, steps: int, eval_images: int) -> dict:
  overrides, xla_flags = ATTEMPTS[attempt]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = _CHILD.format(root=root, arch=arch, overrides=overrides, steps=steps, eval_images=eval_images)
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  lines = [l for l in res.stdout.splitlines() if l.startswith("RESULT ")]
  if res.returncode or not lines:
    return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1][:120]}
  return json.loads(lines[-1][7:])


def main(argv):
  del argv
  from resnet_ensembles.models.layout import forward_macs
  print(f"fp32 peak assumed: {PEAK_FLOPS / 1e9:.0f} GFLOP/s; {os.cpu_count()} CPU cores")
  print(f"{'network':<11}{'attempt':<11}{'train img/s':>12}{'x base':>8}{'% peak':>8}"
        f"{'eval img/s':>12}{'x base':>8}{'% peak':>8}{'compile s':>11}")
  for depth in map(int, _DEPTHS.value):
    fwd = 2 * forward_macs(depth)
    for name in _MODELS.value:
      arch = f"{name}{depth}"
      base = None
      attempts = [a for a in _ATTEMPTS.value if a == "baseline" or str(depth) in _ATTEMPT_DEPTHS.value]
      for attempt in attempts:
        t = time.time()
        r = measure(arch, attempt, _STEPS.value, _EVAL_IMAGES.value)
        if "error" in r:
          print(f"{arch:<11}{attempt:<11} failed: {r['error']}")
          continue
        base = base or r
        print(f"{arch:<11}{attempt:<11}{r['train_ips']:>12.1f}{r['train_ips'] / base['train_ips']:>8.2f}"
              f"{100 * r['train_ips'] * 3 * fwd / PEAK_FLOPS:>7.0f}%"
              f"{r['eval_ips']:>12.1f}{r['eval_ips'] / base['eval_ips']:>8.2f}"
              f"{100 * r['eval_ips'] * fwd / PEAK_FLOPS:>7.0f}%{r['compile_s']:>11.1f}"
              f"   ({time.time() - t:.0f} s)", flush=True)
    print(f"  assumed forward FLOPs/image for depth {depth}: {fwd / 1e6:.0f} M (training: {3 * fwd / 1e6:.0f} M)")


if __name__ == "__main__":
  app.run(main)
