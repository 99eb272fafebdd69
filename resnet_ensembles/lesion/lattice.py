"""The complete lesion lattice: every one of the 2^k networks that keep a subset of k chosen branches.

Lesions that agree on their first choices agree on the network up to the first branch where they differ, so
the 2^k lesions form a binary trie over the chosen positions: at each chosen position every stream splits
into the stream that runs the branch and the one that skips it (`model.deleted`, no branch computed). The
whole lattice then costs 2^k - 1 branch evaluations (plus the unchosen blocks on the streams that reach
them) instead of 2^k x n from the input. The trie is cut at a level so that the streams of one sub-trie fit
a memory budget: each sub-trie's prefix runs from the input with a mask, its suffix is expanded.

Mask m (0 <= m < 2^k) keeps chosen branch j iff bit j of m is set; blocks outside the chosen positions are
always kept. Per mask the sweep returns the summed cross-entropy (nats) and the hits over the images.
Finished sub-tries are kept on disk (`progress.ChunkStore`), so a killed sweep continues where it stopped.
`mask_values` evaluates the same stack of masks from the input (vmapped): the reference and the baseline.
`task_lattice_sweep` runs the same trie on a `lesion.tasks` task (a language model's `TokenTask`: loss in
nats/token, top-1 agreement with the intact model, KL): every stream is scored by the task's own `score`, so the
lattice equals `tasks.evaluate` on `mask_table` (the per-mask reference of a task).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion import progress as progress_lib
from resnet_ensembles.lesion.common import (DEFAULT_BUDGET, LIVE_ACTIVATIONS, Progress, activation_bytes,
                                            balanced_batch, batches)
from resnet_ensembles.store import checkpoints

MAX_LATTICE = 12   # 4,096 networks: beyond that sample permutations (`shapley.sampled_shapley`)


def lattice_positions(layout, positions: Optional[Sequence[int]] = None) -> tuple[int, ...]:
  """The chosen positions: given, else every block (n <= 12), else the non-openers (if <= 12); one-line errors."""
  n = layout.num_blocks
  if positions is None:
    positions = range(n) if n <= MAX_LATTICE else layout.deletable_blocks
  positions = tuple(sorted(int(p) for p in positions))
  if len(set(positions)) != len(positions) or any(not 0 <= p < n for p in positions):
    raise ValueError(f"lattice positions must be distinct blocks in 0..{n - 1}, got {list(positions)}")
  if not 1 <= len(positions) <= MAX_LATTICE:
    raise ValueError(f"a lattice takes 1..{MAX_LATTICE} positions ({2 ** MAX_LATTICE} networks), got "
                     f"{len(positions)}: choose positions or sample Shapley values by permutations")
  return positions


def mask_table(num_blocks: int, positions: Sequence[int]) -> np.ndarray:
  """[2^k, n] float32 0/1 block masks: row m keeps positions[j] iff bit j of m is set."""
  k = len(positions)
  bits = (np.arange(2 ** k)[:, None] >> np.arange(k)[None]) & 1
  table = np.ones((2 ** k, num_blocks), np.float32)
  table[:, list(positions)] = bits
  return table


def _cross_entropy_hits(logits, y, w):
  loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1)[..., 0]
  hits = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
  return jnp.stack([jnp.sum(loss * w, -1), jnp.sum(hits * w, -1)], -1)


def block_evaluations(num_blocks: int, positions: Sequence[int]) -> tuple[int, int]:
  """(branches the trie runs, branches per-mask evaluation runs) per image for the whole lattice."""
  streams, trie = 1, 0
  for p in range(num_blocks):
    trie += streams
    streams *= 2 if p in positions else 1
  return trie, 2 ** len(positions) * num_blocks


def plan(model, positions: Sequence[int], batch_size: int, memory_budget: int) -> tuple[int, int]:
  """(batch, prefix levels L): the 2^(k-L) streams of one sub-trie x batch images fit `memory_budget`."""
  per = activation_bytes(model)
  cap = max(1, memory_budget // per)
  batch = max(1, min(batch_size, cap))
  suffix = min(len(positions), int(math.floor(math.log2(cap // batch))))
  return batch, len(positions) - suffix


_SUBTRIE_FNS: dict = {}


def _subtrie_fn(model, positions: tuple[int, ...], levels: int, task=None):
  """Cached per (model, positions, levels, task type): see `_build_subtrie_fn`."""
  key = (model, tuple(positions), levels, None if task is None else type(task))
  if key not in _SUBTRIE_FNS:
    _SUBTRIE_FNS[key] = _build_subtrie_fn(model, tuple(positions), levels, task)
  return _SUBTRIE_FNS[key]


def _build_subtrie_fn(model, positions: tuple[int, ...], levels: int, task=None):
  """jit: (variables, prefix mask [n], x, y, w) -> [2^(k-L), 2] (loss sum, hits) in suffix-bit order; with a
  task, (variables, prefix mask, batch) -> {the task's sums: [2^(k-L)]}, each stream scored by `task.score`."""
  n, k = model.layout.num_blocks, len(positions)
  start = positions[levels] if levels < k else n
  chosen = {p: j for j, p in enumerate(positions)}

  def streams_logits(v, prefix, x):
    apply = lambda h, *a, **kw: model.apply(v, h, *a, **kw)
    h = apply(x, method=model.embed)
    for p in range(start):
      h = apply(h, p, method=model.block, mask=prefix[p])
    streams = h[None]
    for p in range(start, n):
      flat = streams.reshape((-1,) + streams.shape[2:])
      kept = apply(flat, p, method=model.block)
      kept = kept.reshape(streams.shape[:2] + kept.shape[1:])
      if p in chosen:  # stream s splits into s (branch kept: bit set) and s + half (skipped)
        gone = apply(flat, p, method=model.deleted)
        streams = jnp.concatenate([kept, gone.reshape(streams.shape[:2] + gone.shape[1:])])
      else:
        streams = kept
    logits = apply(streams.reshape((-1,) + streams.shape[2:]), method=model.readout)
    return logits.reshape(streams.shape[:2] + logits.shape[1:])

  def run(v, prefix, x, y, w):
    logits = streams_logits(v, prefix, data_lib.normalize_for(model, x))
    return _cross_entropy_hits(logits, y[None], w[None])

  def run_task(v, prefix, batch):
    x = task.inputs(model, batch)
    reference = model.apply(v, x) if task.wants_reference else None
    # one stream at a time (lax.map): a vmapped score over the streams miscompiled on XLA's CPU backend (the KL
    # of some streams came out wrong while their loss and agreement were right), and it holds less memory
    return jax.lax.map(lambda lg: task.score(model, lg, batch, reference), streams_logits(v, prefix, x))
  return jax.jit(run if task is None else run_task)


def suffix_bits(positions: Sequence[int], levels: int) -> np.ndarray:
  """The mask bits each stream of a sub-trie carries, in the order `_subtrie_fn` returns them."""
  bits = np.zeros(1, np.int64)
  for j in range(levels, len(positions)):
    bits = np.concatenate([bits | (1 << j), bits])
  return bits


def lattice_sweep(model, variables: dict, split: data_lib.Split, positions: Optional[Sequence[int]] = None, *,
                  batch_size: int = 16, memory_budget: int = DEFAULT_BUDGET, resume_dir: Optional[str] = None,
                  levels: Optional[int] = None) -> dict:
  """Every lesion of the chosen positions on `split` (stored BatchNorm statistics), by the trie.

  Returns {"positions", "masks" [2^k, n], "loss" [2^k] (mean nats), "error" [2^k], "levels", "batch_size"}; equals
  `mask_values(model, variables, split, mask_table(n, positions))` to float rounding. `levels` overrides the
  planned cut of the trie (each of the 2^levels sub-tries is one resumable chunk)."""
  positions = lattice_positions(model.layout, positions)
  images, labels = split[0], np.asarray(split[1])
  if len(labels) == 0:
    raise ValueError("the evaluation split is empty")
  batch, planned = plan(model, positions, batch_size, memory_budget)
  levels = planned if levels is None else int(levels)
  if not 0 <= levels <= len(positions):
    raise ValueError(f"levels must be in 0..{len(positions)}, got {levels}")
  n, k = model.layout.num_blocks, len(positions)
  table = mask_table(n, positions)
  fn, bits = _subtrie_fn(model, positions, levels), suffix_bits(positions, levels)
  sums = np.zeros((2 ** k, 2))
  done = np.zeros(2 ** levels, bool)
  store = None
  if resume_dir is not None:
    key = dict(what="lesion lattice", model=type(model).__name__, positions=list(positions), levels=levels,
               batch=batch, variables_sha256=checkpoints.fingerprint(variables),
               test_sha256=progress_lib.digest(images, labels))
    store = progress_lib.ChunkStore(resume_dir, key, 2 ** levels)
    for i, (s, _) in store.load().items():
      sums[i + bits], done[i] = s, True
    if done.any():
      logging.info("lesion lattice: %d of %d sub-tries already in %s", int(done.sum()), len(done), resume_dir)
  todo = np.flatnonzero(~done)
  progress = Progress(f"lesion lattice ({2 ** k} networks, {2 ** levels} sub-tries)",
                      len(todo) * len(bits) * len(labels))
  image_batches = [jax.device_put(b) for b in batches((images, labels), batch)]
  for count, prefix in enumerate(todo, 1):
    prefix_mask = table[prefix]  # bits >= levels are 1 here but unused: the sub-trie expands those positions
    out = sum(np.asarray(fn(variables, prefix_mask, x, y, w), np.float64) for x, y, w in image_batches)
    sums[prefix + bits] = out
    if store is not None:  # the chunk store's two arrays: (loss sum, hits) per network, and nothing
      store.save(int(prefix), out, np.zeros(len(out)))
    progress.update(count * len(bits) * len(labels), force=count == len(todo))
  return {"positions": list(positions), "masks": table, "loss": sums[:, 0] / len(labels),
          "error": 1.0 - sums[:, 1] / len(labels), "levels": levels, "batch_size": batch}


def task_plan(model, task, num_positions: int, memory_budget: int) -> int:
  """Prefix levels L so that one sub-trie's 2^(k-L) streams of one task batch (stream and logits) fit."""
  windows, length = len(task.batches(model)[0][0]), np.shape(task.tokens)[1]
  stream = int(np.prod(model.stream_shape((length,))))
  per_stream = windows * (LIVE_ACTIVATIONS * stream + 3 * length * model.num_classes) * 4
  suffix = int(math.floor(math.log2(max(1, memory_budget // per_stream))))
  return max(0, num_positions - suffix)


def task_lattice_sweep(model, variables: dict, task, positions: Optional[Sequence[int]] = None, *,
                       memory_budget: int = DEFAULT_BUDGET, resume_dir: Optional[str] = None,
                       levels: Optional[int] = None) -> dict:
  """Every lesion of the chosen positions scored by `task` (a `lesion.tasks` task), by the trie.

  Returns {"positions", "masks" [2^k, n], "levels", "batch_size", and the task's summary over the 2^k networks
  (a `TokenTask`: "loss", "kl", "agreement", "accuracy" [2^k])}; equals `tasks.evaluate(model, variables, task,
  mask_table(n, positions))` to float rounding."""
  positions = lattice_positions(model.layout, positions)
  n, k = model.layout.num_blocks, len(positions)
  data = task.batches(model)   # the task's one-line errors (bad tokens, empty windows) before anything compiles
  levels = task_plan(model, task, k, memory_budget) if levels is None else int(levels)
  if not 0 <= levels <= k:
    raise ValueError(f"levels must be in 0..{k}, got {levels}")
  table = mask_table(n, positions)
  fn, bits = _subtrie_fn(model, positions, levels, task), suffix_bits(positions, levels)
  names = sorted(jax.eval_shape(fn, variables, table[0], data[0]))
  sums = np.zeros((2 ** k, len(names)))
  done = np.zeros(2 ** levels, bool)
  store = None
  if resume_dir is not None:
    key = dict(what="lesion lattice", task=type(task).__name__, metrics=names, model=type(model).__name__,
               positions=list(positions), levels=levels, variables_sha256=checkpoints.fingerprint(variables),
               data_sha256=progress_lib.digest(*[np.asarray(a) for b in data for a in b]))
    store = progress_lib.ChunkStore(resume_dir, key, 2 ** levels)
    for i, (s, _) in store.load().items():
      sums[i + bits], done[i] = s, True
  todo = np.flatnonzero(~done)
  progress = Progress(f"lesion lattice ({2 ** k} networks, {2 ** levels} sub-tries, {type(task).__name__})",
                      len(todo) * len(bits))
  for count, prefix in enumerate(todo, 1):
    out = 0.0
    for batch in data:
      part = fn(variables, table[prefix], batch)
      out = out + np.stack([np.asarray(part[m], np.float64) for m in names], -1)
    sums[prefix + bits] = out
    if store is not None:
      store.save(int(prefix), out, np.zeros(len(out)))
    progress.update(count * len(bits), force=count == len(todo))
  summary = task.summary(model, {m: sums[:, i] for i, m in enumerate(names)})
  return dict(summary, positions=list(positions), masks=table, levels=levels, batch_size=len(data[0][0]))


def _stack_fn(model):
  def run(v, masks, x, y, w):
    x = data_lib.normalize_for(model, x)
    return jax.vmap(lambda m: _cross_entropy_hits(model.apply(v, x, block_mask=m), y, w))(masks)
  return jax.jit(run)


_STACK_FNS: dict = {}


def mask_values(model, variables: dict, split: data_lib.Split, masks: np.ndarray, *, batch_size: int = 100,
                masks_per_call: int = 16) -> dict:
  """{"loss" [M], "error" [M]} of a stack of block masks [M, n], each network evaluated from the input
  (the mask stack vmapped, `masks_per_call` at a time): the per-mask reference of `lattice_sweep`."""
  masks = np.asarray(masks, np.float32)
  if masks.ndim != 2 or masks.shape[1] != model.layout.num_blocks:
    raise ValueError(f"masks must have shape (M, {model.layout.num_blocks}), got {masks.shape}")
  labels = np.asarray(split[1])
  if len(labels) == 0:
    raise ValueError("the evaluation split is empty")
  fn = _STACK_FNS.setdefault(model, _stack_fn(model))
  total = len(masks)
  padded = -(-total // masks_per_call) * masks_per_call
  stack = np.concatenate([masks, np.ones((padded - total, masks.shape[1]), np.float32)])
  image_batches = [jax.device_put(b) for b in batches((split[0], labels), balanced_batch(batch_size, len(labels)))]
  sums = np.zeros((padded, 2))
  for s in range(0, padded, masks_per_call):
    chunk = stack[s:s + masks_per_call]
    sums[s:s + masks_per_call] = sum(np.asarray(fn(variables, chunk, x, y, w), np.float64)
                                     for x, y, w in image_batches)
  return {"loss": sums[:total, 0] / len(labels), "error": 1.0 - sums[:total, 1] / len(labels)}
