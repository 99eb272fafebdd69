"""One definition of every CIFAR network the project studies.

A block computes y = post(shortcut(x) + m * f(x)) (ResNet) or y = m * post(f(x)) + (1 - m) * shortcut(x)
(plain net). Experiments never copy this forward pass; they feed it traced per-block inputs instead:

  block_mask  [n]  0 deletes block i (its output becomes its shortcut applied to its input);
  block_order [n]  within-stage permutation: position j runs the parameters of block order[j];
  grad_route  [n]  forward unchanged, backward through the residual branch (1) or the skip (0) only
                   (one path's route); or [2, n]: gates on the branch's and the skip's gradient, row by
                   row (short-path training: branch gates 1 on K blocks, skip gates all 1);
  path_groups  K   (static) the batch holds K identical copies; each residual branch moves its
                   cotangent from copy k to copy k+1, so copy k's input gradient is the sum over all
                   paths of length k (the exact per-length decomposition of `paths.py`).

Being arrays, masks/orders/routes can be stacked and `jax.vmap`ped with one compiled program.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from resnet_ensembles.models.layout import Layout, cifar_layout
from resnet_ensembles.models.residual import check_block_inputs, residual_add, shift_cotangent

Array = Any
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # He et al. / fb.resnet.torch


def in_chunks(fn, x: Array, chunk: int) -> Array:
  """fn over the batch in slices of `chunk` images, concatenated: the same values as fn(x) for any fn that
  treats images independently (a convolution). 0, or a batch no larger than `chunk`, is one call."""
  if not chunk or x.shape[0] <= chunk:
    return fn(x)
  return jnp.concatenate([fn(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


def type_a_shortcut(x: Array, features: int, stride: int, pad: str = "end") -> Array:
  """Strided subsample plus zero-padded channels (He et al.'s option A); identity when shapes match.

  `pad="end"` appends the zero channels (fb.resnet.torch); `"both"` puts half on each side so the
  identity channels sit in the middle (the akamaster PyTorch CIFAR ResNets that `store.torch_import` reads)."""
  if stride > 1:
    x = x[:, ::stride, ::stride, :]
  extra = features - x.shape[-1]
  if extra > 0:
    before = extra // 2 if pad == "both" else 0
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (before, extra - before)))
  return x


class ResidualBranch(nn.Module):
  """f_i: two 3x3 convolutions; BN-ReLU before each ("preact") or BN after each ("original").

  In training, BatchNorm sees the whole batch and only the convolutions run `conv_chunk` images at a time."""
  features: int
  stride: int
  variant: str
  dtype: Any = jnp.float32
  conv_chunk: int = 0

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    def conv(s: int, name: str):
      module = nn.Conv(self.features, (3, 3), (s, s), padding=1, use_bias=False, kernel_init=_conv_init,
                       dtype=self.dtype, name=name)
      return lambda h: in_chunks(module, h, self.conv_chunk if train else 0)
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                   dtype=self.dtype, name=name)
    if self.variant == "preact":
      x = conv(self.stride, "conv1")(nn.relu(bn("bn1")(x)))
      return conv(1, "conv2")(nn.relu(bn("bn2")(x)))
    x = nn.relu(bn("bn1")(conv(self.stride, "conv1")(x)))
    return bn("bn2")(conv(1, "conv2")(x))


class CifarResNet(nn.Module):
  """He et al. CIFAR ResNet (depth 6n+2, 16/32/64 channels, type-A shortcuts); a `models.ResidualStack`.

  `variant="preact"` is He et al. 2016b (the network Veit et al. lesioned); `"original"` is 2016a.
  Besides `__call__`, the pieces `embed`, `block`, `branch`, `shortcut` and `readout` are public methods so that
  engines which walk the network block by block (prefix-shared sweeps, per-block VJPs) run exactly
  this definition: `model.apply(variables, h, pos, method=model.block)`.
  """
  depth: int
  variant: str = "preact"
  num_classes: int = 10
  width: int = 16
  dtype: Any = jnp.float32
  residual: bool = True
  shortcut_pad: str = "end"     # where option-A shortcuts put their zero channels: "end" or "both"
  input_stats: str = "cifar10"  # which standardisation its inputs get (data.normalize_for): or "imagenet"
  # Images per convolution call in the residual branches during training (0: the whole batch). The same
  # function: on a 2-core x86 CPU, batch-128 training of ResNet-110 ran 1.54x faster in chunks of 16
  # (benchmarks/README.md; evaluation gains nothing, so it keeps whole batches). An execution setting:
  # checkpoints ignore it (EXECUTION_FIELDS). A CPU setting: on accelerators, whose batch is sharded over
  # devices, keep 0 (slices of a sharded batch would gather it).
  conv_chunk: int = 0
  input_stride: ClassVar[int] = 1         # input resolution / first stage's resolution
  batch_norm: ClassVar[bool] = True       # variables hold BatchNorm statistics (models.interface)

  @property
  def layout(self) -> Layout:
    return cifar_layout(self.depth, self.width)

  def stream_shape(self, image_hw: tuple[int, int]) -> tuple[int, ...]:
    """One image's activation entering block 0 (the largest a block sees): memory estimates."""
    return (image_hw[0] // self.input_stride, image_hw[1] // self.input_stride, self.layout.block_features[0])

  def setup(self):
    if self.variant not in ("preact", "original"):
      raise ValueError(f"variant must be 'preact' or 'original', got {self.variant!r}")
    if self.shortcut_pad not in ("end", "both"):
      raise ValueError(f"shortcut_pad must be 'end' or 'both', got {self.shortcut_pad!r}")
    if self.input_stats not in ("cifar10", "imagenet"):
      raise ValueError(f"input_stats must be 'cifar10' or 'imagenet', got {self.input_stats!r}")
    layout = self.layout
    bn = lambda: nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    self.stem_conv = nn.Conv(self.width, (3, 3), padding=1, use_bias=False, kernel_init=_conv_init,
                             dtype=self.dtype)
    if self.variant == "original":
      self.stem_bn = bn()
    for i in range(layout.num_blocks):
      setattr(self, f"block_{i:02d}", ResidualBranch(layout.block_features[i], layout.block_strides[i],
                                                     self.variant, self.dtype, self.conv_chunk))
    if self.variant == "preact":
      self.head_bn = bn()
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def __call__(self, x: Array, train: bool = False, block_mask: Optional[Array] = None,
               block_order: Optional[Array] = None, grad_route: Optional[Array] = None,
               path_groups: int = 0) -> Array:
    layout = self.layout
    n = layout.num_blocks
    check_block_inputs(f"depth {self.depth}", layout, x.shape[0], train, block_mask, block_order, grad_route)
    if path_groups and (train or not self.residual):
      raise ValueError("path_groups needs a ResNet in inference mode (BatchNorm must not mix copies)")
    x = self.embed(x, train)
    for pos in range(n):
      x = self.block(x, pos, train,
                     mask=None if block_mask is None else block_mask[..., pos],
                     route=None if grad_route is None else grad_route[..., pos],
                     order=block_order, path_groups=path_groups)
    return self.readout(x, train)

  def embed(self, x: Array, train: bool = False) -> Array:
    """Stem: the activation entering block 0."""
    x = self.stem_conv(x.astype(self.dtype))
    if self.variant == "original":
      x = nn.relu(self.stem_bn(x, use_running_average=not train))
    return x

  def readout(self, x: Array, train: bool = False) -> Array:
    """Final BN-ReLU (preact), global average pool, classifier."""
    if self.variant == "preact":
      x = nn.relu(self.head_bn(x, use_running_average=not train))
    return self.head(jnp.mean(x, axis=(1, 2))).astype(jnp.float32)

  def shortcut(self, x: Array, pos: int, train: bool = False) -> Array:
    del train  # parameter-free here; subclasses with projection shortcuts (BatchNorm) need it
    return type_a_shortcut(x, self.layout.block_features[pos], self.layout.block_strides[pos],
                           self.shortcut_pad)

  def branch(self, x: Array, pos: int, train: bool = False, order: Optional[Array] = None) -> Array:
    """f at position `pos`: block `order[pos]`'s variables (a traced index) when an order is given."""
    if order is None or pos in self.layout.stage_openers or self.is_initializing():
      return getattr(self, f"block_{pos:02d}")(x, train)
    stage = self.layout.stage_of_block[pos]
    members = [i for i in self.layout.stage_blocks(stage) if i not in self.layout.stage_openers]
    variables = {c: v for c, v in self.variables.items() if c in ("params", "batch_stats")}
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                           *[{c: variables[c][f"block_{i:02d}"] for c in variables} for i in members])
    chosen = jax.tree.map(lambda s: s[order[pos] - members[0]], stacked)
    module = getattr(self, f"block_{pos:02d}").clone(parent=None, name=None)
    return module.apply(chosen, x, train=False)

  def block(self, x: Array, pos: int, train: bool = False, mask: Optional[Array] = None,
            route: Optional[Array] = None, order: Optional[Array] = None, path_groups: int = 0) -> Array:
    """One block at position `pos`; `mask`/`route` are this block's scalars (traced is fine), or
    `mask` is one value per example [B] (per-example stochastic depth), or `route` is [2] (the branch's
    and the skip's gradient gates; a scalar r means r and 1 - r)."""
    shortcut = self.shortcut(x, pos, train)
    branch = self.branch(x, pos, train, order)
    if path_groups:
      branch = shift_cotangent(branch, path_groups)
    if self.residual:
      return self._post(residual_add(shortcut, branch, mask, route, self.dtype))
    if route is not None:
      raise ValueError("grad_route needs skip connections; a plain net has none")
    out = self._post(branch)
    if mask is None:
      return out
    m = jnp.asarray(mask, self.dtype)
    m = m[:, None, None, None] if m.ndim == 1 else m
    return m * out + (1 - m) * shortcut

  def deleted(self, x: Array, pos: int) -> Array:
    """What `block(x, pos, mask=0)` returns, without computing the branch it would zero."""
    shortcut = self.shortcut(x, pos)
    return self._post(shortcut) if self.residual else shortcut

  def _post(self, y: Array) -> Array:
    return nn.relu(y) if self.variant == "original" else y


class PlainNet(CifarResNet):
  """The same stack without identity shortcuts: the plain counterpart of the lesion study."""
  residual: bool = False


def build_model(name: str, depth: int, variant: str = "preact", num_classes: int = 10,
                width: int = 16, dtype: Any = jnp.float32, shortcut_pad: str = "end",
                input_stats: str = "cifar10", conv_chunk: int = 0) -> CifarResNet:
  """Builds a model by config name ("resnet" or "plain")."""
  classes = {"resnet": CifarResNet, "plain": PlainNet}
  if name not in classes:
    raise ValueError(f"model must be one of {sorted(classes)}, got {name!r}")
  return classes[name](depth=depth, variant=variant, num_classes=num_classes, width=width, dtype=dtype,
                       shortcut_pad=shortcut_pad, input_stats=input_stats, conv_chunk=conv_chunk)
