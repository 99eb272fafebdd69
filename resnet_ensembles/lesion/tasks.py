"""What a lesion costs belongs to the task, not to the engine: a task says what goes in, what the intact
network's output is kept for, and how a lesioned network's output is scored and summarised.

  ImageTask   labelled images: top-1 error (top-5 above 10 classes), per-class accuracy, mean loss
  TokenTask   next-token windows: mean next-token loss (nats/token), top-1 agreement with the intact
              model's next-token choice, KL(intact || lesioned) per token (Lad et al. 2024), top-1 accuracy

`evaluate` runs a stack of configurations — masks [M, n], block orders [M, n], and `parallel_from` [M, L] for
models with layers — as one vmapped program per chunk of configurations, streaming the task's batches: each
batch's intact output is computed once and every configuration's score is summed over the batches.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion.common import Progress, balanced_batch, batches, counts, summary


@dataclasses.dataclass(frozen=True, eq=False)
class ImageTask:
  """Images [N, H, W, 3] uint8 and labels [N]."""
  images: np.ndarray
  labels: np.ndarray
  batch_size: int = 500
  wants_reference = False

  def batches(self, model):
    size = balanced_batch(self.batch_size, len(self.labels))
    return [jax.device_put(b) for b in batches((self.images, np.asarray(self.labels)), size)]

  @staticmethod
  def inputs(model, batch):
    return data_lib.normalize_for(model, batch[0])

  @staticmethod
  def score(model, logits, batch, reference):
    del reference
    x, y, w = batch
    correct, top5 = counts(logits, y, w, model.num_classes)
    loss = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y) * w)
    return {"correct": correct, "top5": top5, "loss": loss}

  def summary(self, model, sums: dict) -> dict:
    labels = np.asarray(self.labels)
    out = summary(sums["correct"], sums["top5"], labels, model.num_classes)
    out["loss"] = np.asarray(sums["loss"], np.float64) / len(labels)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class TokenTask:
  """Windows of token ids: inputs [W, T] and their next tokens targets [W, T]."""
  tokens: np.ndarray
  targets: np.ndarray
  batch_size: int = 4
  wants_reference = True

  def __post_init__(self):
    if np.shape(self.tokens) != np.shape(self.targets) or np.ndim(self.tokens) != 2 or not len(self.targets):
      raise ValueError(f"token windows need inputs and targets of one shape [windows, length], got "
                       f"{np.shape(self.tokens)} and {np.shape(self.targets)}")

  def batches(self, model):
    model.check_tokens(self.tokens)
    model.check_tokens(self.targets)
    size = balanced_batch(self.batch_size, len(self.targets))
    out = []
    for start in range(0, len(self.targets), size):
      x, y = self.tokens[start:start + size], self.targets[start:start + size]
      w = np.ones(y.shape, np.float32)
      pad = ((0, size - len(y)), (0, 0))
      out.append(jax.device_put((np.pad(x, pad), np.pad(y, pad), np.pad(w, pad))))
    return out

  @staticmethod
  def inputs(model, batch):
    del model
    return batch[0]

  @staticmethod
  def score(model, logits, batch, reference):
    del model
    _, y, w = batch
    logp = jax.nn.log_softmax(logits)
    ref = jax.nn.log_softmax(reference)
    loss = -jnp.take_along_axis(logp, y[..., None], -1)[..., 0]
    kl = jnp.sum(jnp.exp(ref) * (ref - logp), -1)
    choice = jnp.argmax(logits, -1)
    return {"loss": jnp.sum(loss * w), "kl": jnp.sum(kl * w), "tokens": jnp.sum(w),
            "agreement": jnp.sum((choice == jnp.argmax(reference, -1)) * w), "correct": jnp.sum((choice == y) * w)}

  def summary(self, model, sums: dict) -> dict:
    del model
    n = np.asarray(sums["tokens"], np.float64)
    return {"loss": sums["loss"] / n, "kl": sums["kl"] / n, "agreement": sums["agreement"] / n,
            "accuracy": sums["correct"] / n, "tokens": int(n.max())}


_PROGRAMS: dict = {}


def _program(model, task, with_reads: bool):
  key = (model, type(task), with_reads)
  if key not in _PROGRAMS:
    def stack_scores(variables, masks, orders, reads, batch):
      x = task.inputs(model, batch)
      reference = model.apply(variables, x) if task.wants_reference else None
      extra = lambda r: {"parallel_from": r} if with_reads else {}
      net = lambda m, o, r: task.score(model, model.apply(variables, x, block_mask=m, block_order=o, **extra(r)),
                                       batch, reference)
      return jax.vmap(net)(masks, orders, reads)
    _PROGRAMS[key] = jax.jit(stack_scores)
  return _PROGRAMS[key]


def takes_parallel_from(model) -> bool:
  return "parallel_from" in inspect.signature(type(model).__call__).parameters


def evaluate(model, variables: dict, task, masks: np.ndarray, orders: Optional[np.ndarray] = None,
             reads: Optional[np.ndarray] = None, *, networks_per_chunk: int = 8, what: str = "lesions") -> dict:
  """The task's summary of every configuration i (masks[i], orders[i], reads[i]); arrays over configurations."""
  n = model.layout.num_blocks
  masks = np.asarray(masks, np.float32)
  if masks.ndim != 2 or masks.shape[1] != n:
    raise ValueError(f"masks must be [configurations, {n}], got {masks.shape}")
  orders = np.tile(np.arange(n, dtype=np.int32), (len(masks), 1)) if orders is None else np.asarray(orders, np.int32)
  if orders.shape != masks.shape:
    raise ValueError(f"orders must be [configurations, {n}] like the masks, got {orders.shape}")
  if reads is not None:
    if not takes_parallel_from(model):
      raise ValueError(f"parallel layers need a model whose __call__ takes parallel_from; {type(model).__name__} "
                       f"has none")
    reads = np.asarray(reads, np.int32)
    depth = model.depth
    if reads.shape != (len(masks), depth) or np.any(reads < 0) or np.any(reads > np.arange(depth)):
      raise ValueError(f"parallel_from must be [configurations, {depth}] with entry l in 0..l, got {reads.shape}")
  chunk = max(1, min(networks_per_chunk, len(masks)))
  pad = -len(masks) % chunk  # padded with the intact network so every chunk has one shape
  fill = lambda a, row: np.concatenate([a, np.tile(row, (pad, 1))]) if pad else a
  masks, orders = fill(masks, np.ones(n, np.float32)), fill(orders, np.arange(n, dtype=np.int32))
  reads_all = None if reads is None else fill(reads, np.arange(model.depth, dtype=np.int32))
  fn, data = _program(model, task, reads is not None), task.batches(model)
  total, sums = len(masks), None
  progress = Progress(what, total * len(data))
  for start in range(0, total, chunk):
    part = [masks[start:start + chunk], orders[start:start + chunk],
            None if reads_all is None else reads_all[start:start + chunk]]
    acc = None
    for batch in data:
      out = fn(variables, *part, batch)
      acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
    acc = jax.tree.map(np.asarray, acc)
    sums = acc if sums is None else jax.tree.map(lambda a, b: np.concatenate([a, b]), sums, acc)
    progress.update((start + chunk) * len(data), force=start + chunk == total)
  keep = total - pad
  return task.summary(model, jax.tree.map(lambda a: np.asarray(a, np.float64)[:keep], sums))
