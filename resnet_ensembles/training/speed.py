"""Training speed per compute precision, and the rule that picks the precision a long run trains in.

`measure(config, train_split)` times the real training step (`steps.train_step`: augmentation, forward,
backward, SGD update) of the configured network at config.batch_size on real images in three precisions:

  fp32   float32 network, `jax_default_matmul_precision="highest"` (full fp32 convolutions);
  tf32   float32 network, JAX's default precision (on an Ampere/Hopper GPU: TF32 tensor-core convolutions);
  bf16   the network with dtype bfloat16 (fp32 parameters, bf16 compute), default precision.

It reports images/s, the model FLOPs it assumes per training image (2 x `layout.forward_macs` for the
forward pass, x 3 for forward + backward) and, on an H100/H200, the fraction of the chip's dense peak for
that precision (`PEAK_TFLOPS`). Then an accuracy check: `check_steps` steps of real training (the run's own
schedule, seed and batches) from the same initial network in the faster fp32 reading and in bf16; the mean
training loss of the last quarter of those steps is compared. `choose` applies the rule (`RULE`).
"""
from __future__ import annotations

import contextlib
import functools
import time
from typing import Callable, Optional

import jax
import numpy as np

from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.models import samplers
from resnet_ensembles.models.layout import forward_macs
from resnet_ensembles.parallel.mesh import data_mesh, global_batch, replicate
from resnet_ensembles.training import schedules, steps

PRECISIONS = {  # name: (model dtype, jax_default_matmul_precision or None for JAX's default)
    "fp32": ("float32", "highest"), "tf32": ("float32", None), "bf16": ("bfloat16", None)}
# Dense (no sparsity) peaks of the H100 SXM and H200 SXM, which share the compute die: NVIDIA's H200 / H100
# datasheets list FP32 67 TFLOP/s, TF32 tensor core 989 and BF16 tensor core 1,979 TFLOP/s *with sparsity*,
# i.e. 494.7 and 989.4 dense.
PEAK_TFLOPS = {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}
RULE = ("Not on a GPU: fp32 at JAX's default precision (which is full fp32 on a CPU). On a GPU: TF32 unless it "
        "is less than 1.10x as fast as fp32 (then fp32: the precision costs little); bf16 only when it is at "
        "least 1.25x as fast as that choice AND its training loss over the last quarter of the check steps is "
        "within max(0.03, 3%) of that choice's (same network, same batches).")


@contextlib.contextmanager
def _matmul_precision(name: str):
  scoped = getattr(jax, "default_matmul_precision", None)  # a context manager in JAX 0.10 and 0.11
  if scoped is not None:
    with scoped(name):
      yield
    return
  old = jax.config.jax_default_matmul_precision
  jax.config.update("jax_default_matmul_precision", name)
  try:
    yield
  finally:
    jax.config.update("jax_default_matmul_precision", old)


def _step_fn(config, precision: str, mesh):
  dtype, matmul = PRECISIONS[precision]
  cfg = config.copy_and_resolve_references()
  cfg.model.dtype = dtype
  model = models.from_config(cfg)
  lr_fn = schedules.learning_rate_fn(cfg, 1000)
  tx = schedules.make_optimizer(cfg, lr_fn)
  sampler = samplers.make_sampler(cfg.train_mask, model.layout, cfg.batch_size)
  fn = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, sampler=sampler,
                                 preprocess=functools.partial(data_lib.augment, stats=model.input_stats)),
               donate_argnums=0)

  def run(state, batch, key):
    if matmul is None:
      return fn(state, batch, key)
    with _matmul_precision(matmul):  # part of the trace: its own compiled program
      return fn(state, batch, key)

  init = lambda: replicate(steps.create_state(cfg, model, tx, jax.random.PRNGKey(cfg.seed)), mesh)
  return run, init


def _batches(config, train_split, mesh, n: int):
  images, labels = train_split
  order = np.random.default_rng([config.seed, 0]).permutation(len(labels))
  b = config.batch_size
  for i in range(n):
    idx = order[np.arange(i * b, (i + 1) * b) % len(labels)]
    yield global_batch({"image": images[idx], "label": labels[idx]}, mesh, b)


def measure(config, train_split, *, warmup: int = 20, timed: int = 100, check_steps: int = 400,
            precisions=tuple(PRECISIONS), partial: Optional[dict] = None,
            save: Optional[Callable[[dict], None]] = None) -> dict:
  """Images/s of each precision at config.batch_size, the bf16 accuracy check and the choice (`choose`).

  `partial`: what an interrupted call measured on this device (its `save`d dict): those precisions are kept.
  `save(out)` is called after each precision measured, so a stopped measurement continues from there."""
  mesh = data_mesh()
  key = jax.random.PRNGKey(config.seed + 1)
  device = jax.devices()[0]
  flops = 6 * forward_macs(config.model.depth, config.model.width)
  out = {"device": f"{jax.device_count()} x {device.device_kind}", "platform": jax.default_backend(),
         "jax": jax.__version__, "model": f"{config.model.name}{config.model.depth}",
         "batch_size": config.batch_size, "train_flops_per_image": flops, "peak_tflops_assumed": PEAK_TFLOPS,
         "peak_source": "NVIDIA H100/H200 SXM datasheets (dense = half the listed sparse tensor rates)",
         "results": {}}
  if partial and partial.get("device") == out["device"] and partial.get("model") == out["model"]:
    out["results"] = dict(partial.get("results", {}))
  on_hopper = any(n in device.device_kind for n in ("H100", "H200"))
  fns = {}
  for p in precisions:
    run, init = _step_fn(config, p, mesh)
    fns[p] = (run, init)
    if p in out["results"]:
      print(f"  speed {p}: {out['results'][p]['images_per_s']:.0f} img/s (measured before)", flush=True)
      continue
    state = init()
    batches = list(_batches(config, train_split, mesh, 4))
    t0 = time.perf_counter()
    state, m = run(state, batches[0], key)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    for i in range(warmup):
      state, m = run(state, batches[i % 4], key)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(timed):
      state, m = run(state, batches[i % 4], key)
    jax.block_until_ready((state.params, m))
    wall = time.perf_counter() - t0
    ips = timed * config.batch_size / wall
    r = {"images_per_s": round(ips, 1), "compile_s": round(compile_s, 1), "timed_steps": timed,
         "achieved_tflops": round(ips * flops / 1e12, 3)}
    if on_hopper:
      r["fraction_of_peak"] = round(ips * flops / 1e12 / PEAK_TFLOPS[p], 4)
    out["results"][p] = r
    print(f"  speed {p}: {ips:.0f} img/s (compile {compile_s:.0f} s), {r['achieved_tflops']:.2f} TFLOP/s"
          + (f", {100 * r['fraction_of_peak']:.1f}% of the {PEAK_TFLOPS[p]:.0f} TFLOP/s {p} peak" if on_hopper
             else ""), flush=True)
    if save:
      save(out)
  if check_steps > 0 and "bf16" in fns:
    base = _faster_fp32(out["results"])
    losses = {}
    for p in (base, "bf16"):
      run, init = fns[p]
      state, seen = init(), []
      for i, batch in enumerate(_batches(config, train_split, mesh, check_steps)):
        state, m = run(state, batch, key)
        seen.append(m["loss"])
      losses[p] = [float(x) for x in jax.device_get(seen)]
    q = max(1, check_steps // 4)
    a, b = float(np.mean(losses[base][-q:])), float(np.mean(losses["bf16"][-q:]))
    out["bf16_check"] = {"steps": check_steps, "against": base, "loss_last_quarter": {base: a, "bf16": b},
                         "tolerance": max(0.03, 0.03 * a), "passed": bool(abs(b - a) <= max(0.03, 0.03 * a)
                                                                         and np.isfinite(b))}
    print(f"  bf16 check: loss over the last {q} of {check_steps} steps {b:.4f} vs {a:.4f} ({base}): "
          f"{'passed' if out['bf16_check']['passed'] else 'failed'}", flush=True)
  out["choice"] = choose(out)
  out["rule"] = RULE
  return out


def _faster_fp32(results: dict) -> str:
  if "tf32" in results and "fp32" in results:
    return "tf32" if results["tf32"]["images_per_s"] >= 1.10 * results["fp32"]["images_per_s"] else "fp32"
  return "tf32" if "tf32" in results else "fp32"


def choose(measured: dict) -> dict:
  """The precision a run trains in, by `RULE`: {"name", "dtype" ("" or "bfloat16"), "matmul_precision"}."""
  as_config = lambda name, why: {"name": name, "dtype": "bfloat16" if name == "bf16" else "",
                                 "matmul_precision": "highest" if name == "fp32" else "", "why": why}
  if measured["platform"] != "gpu":
    return as_config("default", f"{measured['platform']}: JAX's default precision is full fp32 here")
  res = measured["results"]
  base = _faster_fp32(res)
  check = measured.get("bf16_check", {})
  if "bf16" in res and res["bf16"]["images_per_s"] >= 1.25 * res[base]["images_per_s"] and check.get("passed"):
    return as_config("bf16", f"bf16 {res['bf16']['images_per_s']:.0f} img/s >= 1.25 x {base}, loss check passed")
  return as_config(base, f"{base} by the rule (bf16: {res.get('bf16', {}).get('images_per_s')} img/s, "
                         f"check {'passed' if check.get('passed') else 'not passed'})")
