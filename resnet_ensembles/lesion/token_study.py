"""The lesion sweeps on a language model's layers (a `Llama`, or any model with (attention, MLP) pairs and
`parallel_from`), scored by a `tasks.TokenTask`: each function returns JSON rows, one per configuration.

  single      every sublayer deleted alone (2L rows) and every whole layer (L rows)
  subsets     every set of deleted sublayers: all 2^(2L) masks (1,024 for 5 layers), with k = their size
  orderings   every order of the L layers (L! rows; the adjacent swaps are among them), Kendall's tau each
  painters    Sun et al.'s middle-span skip / reverse / shuffle and every span run in parallel
              (`lesion.painters.configurations`); looped_parallel feeds a parallel span's output back into it
  logit_lens  the final norm and classifier applied to the stream after each sublayer (nostalgebraist 2020)
"""
from __future__ import annotations

import itertools
import math

import jax
import numpy as np

from resnet_ensembles.lesion import painters, tasks
from resnet_ensembles.lesion.masks import kendall_tau
from resnet_ensembles.models.vit import layer_order_to_block_order

METRICS = ("loss", "kl", "agreement", "accuracy")


def _rows(result: dict, rows: list[dict]) -> list[dict]:
  for i, row in enumerate(rows):
    row.update({m: float(result[m][i]) for m in METRICS})
  return rows


def single(model, variables, task, **kw) -> list[dict]:
  n, depth = model.layout.num_blocks, model.depth
  masks, rows = [np.ones(n, np.float32)], [{"kind": "full"}]
  for b in range(n):
    masks.append(np.where(np.arange(n) == b, 0, 1).astype(np.float32))
    rows.append({"kind": "sublayer", "block": b, "layer": b // 2, "sublayer": ("attention", "mlp")[b % 2]})
  for layer in range(depth):
    masks.append(np.where(np.arange(n) // 2 == layer, 0, 1).astype(np.float32))
    rows.append({"kind": "layer", "layer": layer})
  return _rows(tasks.evaluate(model, variables, task, np.stack(masks), what="single deletions", **kw), rows)


def subsets(model, variables, task, **kw) -> list[dict]:
  n = model.layout.num_blocks
  if n > 16:
    raise ValueError(f"all subsets of {n} sublayers are 2^{n} networks; sample k deletions instead")
  masks = 1 - np.asarray(list(itertools.product((0, 1), repeat=n)), np.float32)[:, ::-1]  # row i deletes bits of i
  rows = [{"deleted": np.flatnonzero(m == 0).tolist(), "k": int(n - m.sum())} for m in masks]
  return _rows(tasks.evaluate(model, variables, task, masks, what="all subsets", **kw), rows)


def orderings(model, variables, task, **kw) -> list[dict]:
  depth = model.depth
  if math.factorial(depth) > 50_000:
    raise ValueError(f"every order of {depth} layers is {math.factorial(depth)} networks; sample orders instead")
  layer_orders = np.asarray(list(itertools.permutations(range(depth))), np.int32)
  orders = layer_order_to_block_order(layer_orders)
  rows = [{"layer_order": o.tolist(), "kendall_tau": kendall_tau(o),
           "adjacent_swap": int(np.sum(o != np.arange(depth))) == 2 and int(np.abs(o - np.arange(depth)).max()) == 1}
          for o in layer_orders]
  masks = np.ones(orders.shape, np.float32)
  return _rows(tasks.evaluate(model, variables, task, masks, orders, what="orderings", **kw), rows)


def painters_variants(model, variables, task, shuffles: int = 3, seed: int = 0, **kw) -> list[dict]:
  masks, orders, reads, rows = painters.configurations(model.depth, 2, shuffles, seed)
  return _rows(tasks.evaluate(model, variables, task, masks, orders, reads, what="painters", **kw), rows)


def logit_lens(model, variables, task) -> list[dict]:
  """Loss, KL from the intact model and agreement when the readout reads the stream after 0..n sublayers."""
  n = model.layout.num_blocks

  @jax.jit
  def lens(variables, batch):
    h = model.apply(variables, task.inputs(model, batch), method=model.embed)
    final = model.apply(variables, task.inputs(model, batch))
    outs = []
    for pos in range(n + 1):
      outs.append(task.score(model, model.apply(variables, h, method=model.readout), batch, final))
      if pos < n:
        h = model.apply(variables, h, pos, method=model.block)
    return jax.tree.map(lambda *a: jax.numpy.stack(a), *outs)

  acc = None
  for batch in task.batches(model):
    out = jax.tree.map(np.asarray, lens(variables, batch))
    acc = out if acc is None else jax.tree.map(np.add, acc, out)
  res = task.summary(model, jax.tree.map(lambda a: np.asarray(a, np.float64), acc))
  rows = [{"after_sublayers": p, "after": "embedding" if p == 0 else
           f"layer {(p - 1) // 2} {('attention', 'mlp')[(p - 1) % 2]}"} for p in range(n + 1)]
  return _rows(res, rows)


def stream_geometry(model, variables, task) -> dict:
  """How much each span of layers turns the stream: the mean over tokens of the angular distance
  arccos(cos(h_a, h_b)) / pi between the stream entering layer a and entering layer b (b = L: the stream before
  the final norm). ShortGPT's Block Influence of layer l is 1 - cos(h_l, h_{l+1}); Gromov et al. drop the span
  [a, b) of least angular distance."""
  depth, n = model.depth, model.layout.num_blocks

  @jax.jit
  def angles(variables, batch):
    h = model.apply(variables, task.inputs(model, batch), method=model.embed)
    entering = [h]
    for pos in range(n):
      h = model.apply(variables, h, pos, method=model.block)
      if pos % 2 == 1:
        entering.append(h)
    s = jax.numpy.stack(entering)  # [L + 1, B, T, D]
    s = s / jax.numpy.linalg.norm(s, axis=-1, keepdims=True)
    cos = jax.numpy.einsum("abtd,cbtd->acbt", s, s)
    w = batch[2]
    return (jax.numpy.sum(jax.numpy.arccos(jax.numpy.clip(cos, -1, 1)) / np.pi * w, (-2, -1)),
            jax.numpy.sum((1 - cos) * w, (-2, -1)), jax.numpy.sum(w))

  ang, bi, count = 0.0, 0.0, 0.0
  for batch in task.batches(model):
    a, b, c = angles(variables, batch)
    ang, bi, count = ang + np.asarray(a, np.float64), bi + np.asarray(b, np.float64), count + float(c)
  ang, bi = ang / count, bi / count
  return {"angular_distance": ang.tolist(), "block_influence": [float(bi[l, l + 1]) for l in range(depth)],
          "tokens": int(count)}


def looped_parallel(model, variables, task, spans=((1, 2), (1, 3)), loops=(1, 2, 3)) -> list[dict]:
  """Sun et al.'s looped parallel layers: the span [start, start + length) run in parallel (its input plus the
  sum of its layers' changes, as `parallel_from` does), its output fed back into the same parallel span `loops`
  times; one loop is the parallel variant of `painters_variants`. Built from `model.block` calls, one program
  per (span, loops)."""
  depth, rows = model.depth, []
  for start, length in spans:
    if not (0 <= start and start + length <= depth and length >= 2):
      raise ValueError(f"a looped span needs >= 2 of the {depth} layers, got start {start}, length {length}")
    for count in loops:
      def forward(variables, x, start=start, length=length, count=count):
        layer = lambda h, l: model.apply(variables, model.apply(variables, h, 2 * l, method=model.block), 2 * l + 1,
                                         method=model.block)
        h = model.apply(variables, x, method=model.embed)
        for l in range(start):
          h = layer(h, l)
        for _ in range(count):
          h = h + sum(layer(h, l) - h for l in range(start, start + length))
        for l in range(start + length, depth):
          h = layer(h, l)
        return model.apply(variables, h, method=model.readout)

      @jax.jit
      def score(variables, batch, forward=forward):
        x = task.inputs(model, batch)
        return task.score(model, forward(variables, x), batch, model.apply(variables, x))

      acc = None
      for batch in task.batches(model):
        out = jax.tree.map(np.asarray, score(variables, batch))
        acc = out if acc is None else jax.tree.map(np.add, acc, out)
      res = task.summary(model, jax.tree.map(lambda a: np.asarray(a, np.float64)[None], acc))
      rows.append({"variant": "looped_parallel", "start": start, "length": length, "loops": count,
                   **{m: float(res[m][0]) for m in METRICS}})
  return rows
