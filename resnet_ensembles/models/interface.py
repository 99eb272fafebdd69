"""The one interface the engines (training, lesion, paths) know a network by: `ResidualStack`.

A residual stack is embed -> n residual blocks y = x + m * f_i(x) -> readout. Every lesion and path
experiment is a traced input to the blocks (mask, order, route) or a walk over them one by one, so a new
family gets every experiment by providing, as a Flax module (hashable: engines cache programs per model):

  layout              `Layout`: n = num_blocks; stages (blocks move only within their stage); stage openers
                      (never moved, skipped by k-deletions by default; may be empty); order_unit (blocks
                      that move together); block_macs (cost of each branch, for benchmarks)
  __call__(x, train, block_mask, block_order, grad_route, path_groups) -> logits, the whole stack
  embed(x, train) -> h          the activation entering block 0 (x: normalised images [B, H, W, 3]; for the
                                Llama token ids [B, T] or an already embedded stream [B, T, dim])
  block(h, pos, train, mask, route, order, path_groups) -> h
                      position `pos` with this block's mask (scalar or [B]), route (scalar r: branch r,
                      skip 1 - r; or [2]: branch and skip gradient gates), order (the whole [n] order: the
                      position runs block order[pos]'s parameters) and path_groups (K > 0: wrap the branch
                      output in `residual.shift_cotangent`, so copy k of a K-fold batch gets length-k paths)
  deleted(h, pos) -> h          what block(h, pos, mask=0) returns, without computing the branch
  readout(h, train) -> logits   float32 [B, num_classes]
  stream_shape(image_hw) -> shape of one image's activation entering block 0 (memory estimates)
  num_classes, dtype, input_stats ("cifar10" | "imagenet": how data.normalize_for standardises inputs)
  residual            False for a plain net (no paths, no routes)
  batch_norm          whether `variables` hold "batch_stats" that training updates and a lesion may
                      recalibrate; without it variables may still carry an empty "batch_stats" (the
                      engines pass {"params", "batch_stats"} everywhere) and recalibration is refused
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

from resnet_ensembles.models.layout import Layout

Array = Any


@runtime_checkable
class ResidualStack(Protocol):
  num_classes: int
  dtype: Any
  input_stats: str
  residual: bool
  batch_norm: bool

  @property
  def layout(self) -> Layout: ...

  def __call__(self, x: Array, train: bool = False, block_mask: Optional[Array] = None,
               block_order: Optional[Array] = None, grad_route: Optional[Array] = None,
               path_groups: int = 0) -> Array: ...

  def embed(self, x: Array, train: bool = False) -> Array: ...

  def block(self, x: Array, pos: int, train: bool = False, mask: Optional[Array] = None,
            route: Optional[Array] = None, order: Optional[Array] = None, path_groups: int = 0) -> Array: ...

  def deleted(self, x: Array, pos: int) -> Array: ...

  def readout(self, x: Array, train: bool = False) -> Array: ...

  def stream_shape(self, image_hw: tuple[int, int]) -> tuple[int, ...]: ...

  def init(self, *args, **kwargs) -> Any: ...

  def apply(self, *args, **kwargs) -> Any: ...


MEMBERS = ("num_classes", "dtype", "input_stats", "residual", "batch_norm", "layout", "embed", "block", "deleted",
           "readout", "stream_shape", "init", "apply")


def missing_members(model: Any) -> list[str]:
  """The members of `ResidualStack` that `model` lacks (empty: it implements the interface)."""
  return [name for name in MEMBERS if not hasattr(model, name)]


def require_batch_norm(model: Any, what: str) -> None:
  """A one-line error when `what` (e.g. BatchNorm recalibration) needs BatchNorm statistics the model lacks."""
  if not getattr(model, "batch_norm", False):
    raise ValueError(f"{what} does not apply to {type(model).__name__}: it has no BatchNorm statistics "
                     f"(LayerNorm normalises each example by itself)")
