"""Path analysis (Veit et al. Sec. 5.2, Fig. 6): which path lengths carry the gradient.

An n-block ResNet unrolls into 2^n paths; C(n, k) of them pass through k residual branches. Two ways
to weigh them, both on one forward pass whose per-block VJPs are stored in a `Tape`:

  sampled  the paper's estimate: a random route sends the backward pass through k chosen branches and
           the skips of the rest, so it measures one path of length k (vmapped over many routes);
  exact    G_k, the sum of all C(n, k) length-k path gradients, for every k at once: n+1 cotangent
           components travel backwards and block i maps component k to skip^T c_k + branch^T c_{k-1}.

The Tape and the gradients read off it live in path_gradients.py (re-exported here); this module holds
the counting (distribution, effective window) and the sampling over batches and devices.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
# (scipy.stats is imported in the functions that use it: importing it costs every process ~0.7 s)

from resnet_ensembles import models
from resnet_ensembles.store import checkpoints
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.paths.gradients import (Tape, check_model, decompose, decomposition_norms,  # noqa: F401
                                             forward_tape, full_gradient, mean_norm, routed_gradient,
                                             routed_norms)
from resnet_ensembles.models.samplers import exactly_k
from resnet_ensembles.parallel.mesh import data_mesh, replicate, replicated_spec, shard_host_batch
from resnet_ensembles.utils import logs

Array = Any


def path_length_distribution(n: int) -> dict:
  """Lengths 0..n, exact counts C(n, k) (Python ints), and frequencies C(n, k) / 2^n (also as logs)."""
  from scipy import stats
  if not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"number of blocks must be a positive integer, got {n!r}")
  k = np.arange(n + 1)
  return dict(lengths=k.tolist(), counts=[math.comb(int(n), int(i)) for i in k],
              frequency=stats.binom.pmf(k, n, 0.5), log_frequency=stats.binom.logpmf(k, n, 0.5))


def effective_range(total: Array, share: float = 0.9) -> dict:
  """Smallest window [lo, hi] of lengths carrying `share` of sum(total); ties go to the larger share.

  `total[k]` is the gradient carried by all length-k paths (frequency x mean magnitude, Fig. 6c)."""
  from scipy import stats
  total = np.asarray(total, np.float64)
  if total.ndim != 1 or total.size < 2 or not np.all(np.isfinite(total)) or np.any(total < 0):
    raise ValueError("total must be a finite, non-negative curve over lengths 0..n")
  if not 0.0 < share <= 1.0:
    raise ValueError(f"share must be in (0, 1], got {share}")
  n, csum = total.size - 1, np.concatenate([[0.0], np.cumsum(total)])
  need = share * csum[-1] * (1 - 1e-12)
  best = None
  for width in range(1, n + 2):
    carried = csum[width:] - csum[:-width]  # window [lo, lo + width - 1] for every lo
    if carried.max() >= need:
      lo = int(np.argmax(carried))
      best = (lo, lo + width - 1, float(carried[lo] / csum[-1]) if csum[-1] else 1.0)
      break
  lo, hi, carried = best
  freq = stats.binom.pmf(np.arange(n + 1), n, 0.5)
  return dict(lo=lo, hi=hi, share=share, carried=carried, path_fraction=float(freq[lo:hi + 1].sum()))


def exponential_fit(mean: Array) -> dict:
  """The paper's "the gradient of one path decays exponentially with its length" as a number: a least-squares
  line through log10(magnitude) over the lengths k = 0..n (scipy.stats.linregress). Returns the factor one
  more block multiplies the magnitude by (10^slope) and r^2 of the line."""
  from scipy import stats
  mean = np.asarray(mean, np.float64)
  k = np.arange(mean.size)
  ok = np.isfinite(mean) & (mean > 0)
  if ok.sum() < 3:
    raise ValueError("an exponential fit needs at least 3 positive magnitudes")
  r = stats.linregress(k[ok], np.log10(mean[ok]))
  return dict(factor_per_block=float(10 ** r.slope), r2=float(r.rvalue ** 2), log10_intercept=float(r.intercept),
              lengths=int(ok.sum()))


def sample_routes(key: jax.Array, num_blocks: int, lengths: Array) -> jax.Array:
  """One 0/1 route [n] per entry of `lengths`, each with exactly that many residual blocks."""
  lengths = np.asarray(lengths)
  if lengths.size and (lengths.min() < 0 or lengths.max() > num_blocks):
    raise ValueError(f"path lengths must be in 0..{num_blocks}, got {lengths.min()}..{lengths.max()}")
  keys = jax.random.split(key, lengths.size)
  return jax.vmap(exactly_k, in_axes=(0, None, 0))(keys, num_blocks, jnp.asarray(lengths))


def _batches(model, images: np.ndarray, labels: np.ndarray, batch_size: int, num: int, seed: int, mesh):
  """Random batches (the same on every process: numpy, seeded), normalized and replicated on `mesh`."""
  if batch_size < 1 or num < 1 or batch_size > len(images):
    raise ValueError(f"need 1 <= batch_size <= {len(images)} images and >= 1 batch, got {batch_size}, {num}")
  rng = np.random.default_rng(seed)
  for _ in range(num):
    idx = rng.choice(len(images), batch_size, replace=False)
    yield replicate((data_lib.normalize_for(model, np.asarray(images[idx])), np.asarray(labels[idx])), mesh)


@functools.lru_cache(maxsize=None)
def _on_mesh(mesh) -> tuple:
  """routed_norms / decomposition_norms with outputs replicated, so every process can read them."""
  repl = replicated_spec(mesh)
  return (jax.jit(lambda tape, routes: routed_norms(tape, routes), out_shardings=repl),
          jax.jit(lambda tape: decomposition_norms(tape), out_shardings=repl))


def sample_path_gradients(model, variables, images: np.ndarray, labels: np.ndarray, *, samples_per_length: int,
                          num_batches: int, batch_size: int, seed: int = 0, train_bn: bool = False,
                          chunk: int = 64, mesh=None) -> dict:
  """The paper's estimate: `samples_per_length` random routes of every length 0..n, spread evenly
  over `num_batches` random batches (one forward pass each). Returns per-length mean/std magnitudes.

  Each batch's forward pass is replicated; its routes are spread over the devices of `mesh` (default:
  all devices of all processes), so one process or many give the same numbers."""
  check_model(model)
  n = model.layout.num_blocks
  if samples_per_length < 1 or samples_per_length % num_batches:
    raise ValueError(f"samples_per_length ({samples_per_length}) must be a positive multiple of num_batches "
                     f"({num_batches})")
  mesh = mesh if mesh is not None else data_mesh()
  norms_fn = _on_mesh(mesh)[0]
  variables = replicate(variables, mesh)
  per_batch = samples_per_length // num_batches
  lengths = np.repeat(np.arange(n + 1), per_batch)
  chunk = -(-len(lengths) // -(-len(lengths) // chunk))  # equal chunks of at most `chunk` routes ...
  chunk = -(-chunk // mesh.size) * mesh.size             # ... that split evenly over the devices
  pad = -len(lengths) % chunk
  out = {name: np.zeros((n + 1, samples_per_length)) for name in ("image", "block0")}
  key, t0 = jax.random.PRNGKey(seed), time.time()
  for b, (x, y) in enumerate(_batches(model, images, labels, batch_size, num_batches, seed, mesh)):
    tape = forward_tape(model, variables, x, y, train=train_bn)
    routes = np.asarray(sample_routes(jax.random.fold_in(key, b), n, np.concatenate([lengths, np.zeros(pad, int)])))
    assert np.array_equal(routes.sum(1)[:len(lengths)], lengths)
    norms = [norms_fn(tape, shard_host_batch(routes[i:i + chunk], mesh)) for i in range(0, len(routes), chunk)]
    for j, name in enumerate(("image", "block0")):
      vals = np.concatenate([np.asarray(nm[j]) for nm in norms])[:len(lengths)]
      out[name][:, b * per_batch:(b + 1) * per_batch] = vals.reshape(n + 1, per_batch)
    eta = (time.time() - t0) / (b + 1) * (num_batches - b - 1)
    logging.info("paths: batch %d/%d  %d routes  ETA %s", b + 1, num_batches, len(lengths),
                 logs.duration(eta))
  res = {"samples_per_length": samples_per_length}
  for name, v in out.items():
    res[f"{name}_mean"], res[f"{name}_std"] = v.mean(1).tolist(), v.std(1).tolist()
  return res


def exact_decomposition(model, variables, images: np.ndarray, labels: np.ndarray, *, num_batches: int,
                        batch_size: int, seed: int = 0, train_bn: bool = False, mesh=None) -> dict:
  """||G_k|| for k = 0..n (mean per-image norm, averaged over batches) and the check sum_k G_k == grad."""
  check_model(model)
  mesh = mesh if mesh is not None else data_mesh()
  norms_fn = _on_mesh(mesh)[1]
  variables = replicate(variables, mesh)
  acc = []
  for b, (x, y) in enumerate(_batches(model, images, labels, batch_size, num_batches, seed, mesh)):
    acc.append(jax.device_get(norms_fn(forward_tape(model, variables, x, y, train=train_bn))))
    logging.info("paths: exact decomposition batch %d/%d", b + 1, num_batches)
  mean = {k: np.mean([a[k] for a in acc], axis=0) for k in acc[0]}
  return dict(image=mean["image"].tolist(), block0=mean["block0"].tolist(),
              full_image=float(mean["full_image"]), full_block0=float(mean["full_block0"]),
              sum_error=float(max(a["sum_error"] for a in acc)))


def analyze(model, variables, images: np.ndarray, labels: np.ndarray, config) -> dict:
  """Fig. 6 from a config (experiments/configs/paths.py): distribution, sampled curves, totals, range, G_k."""
  check_model(model)
  if config.bn not in ("inference", "batch"):
    raise ValueError(f"bn must be 'inference' or 'batch', got {config.bn!r}")
  if config.bn == "batch":
    models.require_batch_norm(model, "bn='batch' (BatchNorm in batch mode)")
  if min(config.num_batches, config.exact_batches, config.route_chunk) < 1 or not 0 < config.share <= 1:
    raise ValueError("num_batches, exact_batches and route_chunk must be >= 1 and share in (0, 1]")
  if config.samples_per_length < 1 or config.samples_per_length % config.num_batches:
    raise ValueError(f"samples_per_length ({config.samples_per_length}) must be a positive multiple of "
                     f"num_batches ({config.num_batches})")
  if not 1 <= config.batch_size <= len(images):
    raise ValueError(f"batch_size must be in 1..{len(images)} (the images given), got {config.batch_size}")
  train_bn, n = config.bn == "batch", model.layout.num_blocks
  t0 = time.time()
  sampled = sample_path_gradients(model, variables, images, labels, samples_per_length=config.samples_per_length,
                                  num_batches=config.num_batches, batch_size=config.batch_size,
                                  seed=config.seed, train_bn=train_bn, chunk=config.route_chunk)
  t1 = time.time()
  exact = exact_decomposition(model, variables, images, labels, num_batches=config.exact_batches,
                              batch_size=config.batch_size, seed=config.seed, train_bn=train_bn)
  dist = path_length_distribution(n)
  total = {w: (dist["frequency"] * np.asarray(sampled[f"{w}_mean"])).tolist() for w in ("image", "block0")}
  return dict(num_blocks=n, variables_sha256=checkpoints.fingerprint(variables), distribution={k: np.asarray(v).tolist() for k, v in dist.items()},
              sampled=sampled, total=total, exact=exact,
              effective_range={w: effective_range(total[w], config.share) for w in total},
              decay={w: exponential_fit(sampled[f"{w}_mean"]) for w in total},
              seconds={"sampled": t1 - t0, "exact": time.time() - t1})
