"""Sun et al.'s layer lesions ("Transformer Layers as Painters", AAAI 2025) on a network with layers.

Each configuration is three traced inputs of the model, so all of them run as one vmapped program:
`block_mask` [2L] (delete layers), `block_order` [2L] (move whole layers) and `parallel_from` [L] (layer l
reads the stream that entered layer parallel_from[l]; a span whose layers all read the span's input runs
in parallel: its output is that input plus the sum of the layers' changes). The configurations:

  parallel   every contiguous span of >= 2 layers run in parallel (a row per start and length)
  skip, reverse, shuffle
             Sun et al.'s middle-span variants: the N middle layers (centred; the first and the last layer
             never touched) deleted, run in reverse order, or in `shuffles` seeded random orders (distinct,
             never the identity; all n! - 1 when fewer)

Only models whose `__call__` takes `parallel_from` support it (the ViT, the Llama: a layer is an (attention, MLP)
pair, whose parallel run the per-block ResidualStack interface cannot express as one read).
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion import tasks
from resnet_ensembles.lesion.masks import kendall_tau


def check_painters_model(model) -> None:
  """One line when the model has no `parallel_from` input."""
  if "parallel_from" not in inspect.signature(type(model).__call__).parameters:
    raise ValueError(f"the layer-parallel lesions need a model whose __call__ takes parallel_from (the ViT); "
                     f"{type(model).__name__} has none")


def middle_span(depth: int, n: int) -> tuple[int, int]:
  """[start, stop) of the n middle layers, centred between the first and the last layer."""
  if not 1 <= n <= depth - 2:
    raise ValueError(f"a middle span of a {depth}-layer network has 1..{depth - 2} layers, got {n}")
  start = 1 + (depth - 2 - n) // 2
  return start, start + n


def configurations(depth: int, unit: int = 2, shuffles: int = 3, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
  """(masks [M, unit*depth], orders [M, unit*depth], reads [M, depth], rows); the last row is the full network."""
  if depth < 3:
    raise ValueError(f"the layer lesions need at least 3 layers (a first, a middle, a last), got {depth}")
  ident = np.arange(depth, dtype=np.int32)
  to_blocks = lambda layer_order: (unit * np.asarray(layer_order)[:, None] + np.arange(unit)).reshape(-1)
  rng = np.random.default_rng(seed)
  out = []  # (mask, layer order, reads, row)

  def add(row, mask=None, layer_order=ident, reads=ident):
    m = np.ones(unit * depth, np.float32) if mask is None else mask
    out.append((m, to_blocks(layer_order), np.asarray(reads, np.int32), row))

  for length in range(2, depth + 1):
    for start in range(depth - length + 1):
      reads = ident.copy()
      reads[start:start + length] = start
      add({"variant": "parallel", "start": start, "length": length,
           "middle": start > 0 and start + length < depth}, reads=reads)
  for n in range(1, depth - 1):
    a, b = middle_span(depth, n)
    span = {"start": a, "length": n, "middle": True}
    mask = np.ones(unit * depth, np.float32)
    mask[unit * a:unit * b] = 0
    add({"variant": "skip", **span}, mask=mask)
    if n >= 2:
      order = ident.copy()
      order[a:b] = order[a:b][::-1]
      add({"variant": "reverse", "kendall_tau": kendall_tau(order), **span}, layer_order=order)
      # distinct orders other than the identity (a "shuffle" that keeps the order is no lesion): all n! - 1
      # of them when there are fewer than `shuffles` (for n = 2 only the swap, which is also the reversal)
      drawn: set = set()
      while len(drawn) < min(shuffles, math.factorial(n) - 1):
        order = ident.copy()
        order[a:b] = a + rng.permutation(n)
        if (order == ident).all() or order.tobytes() in drawn:
          continue
        drawn.add(order.tobytes())
        add({"variant": "shuffle", "kendall_tau": kendall_tau(order), **span}, layer_order=order)
  add({"variant": "full", "full": True})
  masks, orders, reads, rows = (list(x) for x in zip(*out))
  return np.stack(masks), np.stack(orders), np.stack(reads), rows


def evaluate(model, variables: dict, split: data_lib.Split, masks: np.ndarray, orders: np.ndarray,
             reads: np.ndarray, *, batch_size: int = 500, networks_per_chunk: int = 8) -> dict:
  """Errors of each configuration (row i: masks[i], orders[i], reads[i]): {"error": [M], "class_accuracy":
  [M, C]}; `networks_per_chunk` configurations run at once, vmapped, over fixed-size padded batches
  (`tasks.evaluate` with an `ImageTask`: the language model's sweeps run the same engine with a `TokenTask`)."""
  check_painters_model(model)
  depth, n = model.depth, model.layout.num_blocks
  reads = np.asarray(reads, np.int32)
  if reads.ndim != 2 or reads.shape[1] != depth or masks.shape != (len(reads), n) or orders.shape != masks.shape:
    raise ValueError(f"need masks and orders [M, {n}] and parallel_from [M, {depth}], got {masks.shape}, "
                     f"{orders.shape}, {reads.shape}")
  if np.any(reads < 0) or np.any(reads > np.arange(depth)):
    raise ValueError("parallel_from[l] must be in 0..l: a layer reads the stream entering it or an earlier layer")
  task = tasks.ImageTask(split[0], np.asarray(split[1]), batch_size)
  out = tasks.evaluate(model, variables, task, masks, orders, reads, networks_per_chunk=networks_per_chunk,
                       what="layer lesions")
  return {"error": out["error"], "class_accuracy": out["class_accuracy"]}
