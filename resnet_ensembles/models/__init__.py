"""Every network family the engines study, behind one small interface (`interface.ResidualStack`):

  layout                      blocks, stage openers, which blocks may be deleted / permuted together
  embed(x) -> h               the activation entering block 0
  block(h, pos, mask, route, order, path_groups) -> h,  deleted(h, pos) -> h
  readout(h) -> logits;  stream_shape(image_hw);  batch_norm, residual, num_classes, dtype, input_stats

Families: CIFAR ResNets and plain nets (`cifar`), ImageNet bottleneck ResNets (`imagenet`), a pre-LN
Vision Transformer whose attention and MLP sublayers are the blocks (`vit`), a Llama-architecture language
model built the same way (`llama`; sampling with a key/value cache: `llama_decode`). What they share — the masked,
routed residual sum, the path tape, the shape checks — is `residual`; helpers over variables are `variables`.

Masks, orders and routes are traced inputs, so one compiled program serves a whole `vmap`ped stack of
them. `from_config(config)` builds any model a run's config.json names. This package imports nothing
from the rest of resnet_ensembles: data, store and every engine sit above it.

  from resnet_ensembles import models
  net = models.CifarResNet(depth=110)              # pre-activation ResNet-110, 54 blocks
  logits = net.apply(variables, images, block_mask=mask)   # mask [54]: 0 deletes a block
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from resnet_ensembles.models.cifar import CifarResNet, PlainNet, build_model, type_a_shortcut  # noqa: F401
from resnet_ensembles.models.imagenet import ImageNetResNet, build_from_config as _imagenet_from_config
from resnet_ensembles.models.interface import ResidualStack, require_batch_norm  # noqa: F401
from resnet_ensembles.models.llama import Llama  # noqa: F401
from resnet_ensembles.models.vit import VisionTransformer, build_from_config as _vit_from_config
from resnet_ensembles.models.layout import Layout, cifar_layout  # noqa: F401
from resnet_ensembles.models.variables import block_names, keep_stats_of_inactive_blocks, num_params  # noqa: F401


# config.model fields that change how a network is computed, not what: a run resumed with another value
# continues the same network (store.checkpoints compares model configs without them).
EXECUTION_FIELDS = ("conv_chunk",)


def network_fields(model_config: dict) -> dict:
  """The fields of a model config that say which network it is (EXECUTION_FIELDS left out)."""
  return {k: v for k, v in model_config.items() if k not in EXECUTION_FIELDS}


def from_config(config) -> ResidualStack:
  """The model of a run's config (`config.model`): CIFAR ResNet / plain net, ImageNet ResNet, or ViT."""
  m = config.model
  if m.name == "imagenet_resnet":
    return _imagenet_from_config(config)
  if m.name == "vit":
    return _vit_from_config(config)
  return build_model(m.name, m.depth, m.variant, m.num_classes, m.width, jnp.dtype(m.dtype),
                     m.get("shortcut_pad", "end"), m.get("input_stats", "cifar10"), m.get("conv_chunk", 0))


# The initialiser runs once: on the CPU it compiles without XLA's backend optimisations. A narrow ImageNet
# ResNet-26's initialiser and optimizer zeros: 6.4 s so, 15.7 s optimised, 32 s run op by op (measured on a
# 2-core x86 CPU beside two background jobs). The values equal the optimised program's to float rounding (2e-7).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def init_variables(model, key: jax.Array, image_size: int = 32) -> dict:
  """`model.init` on one image as a single compiled program (run eagerly, it compiles op by op: hundreds
  of small XLA programs)."""
  init = lambda key: model.init(key, jnp.zeros((1, image_size, image_size, 3), jnp.float32))
  options = _INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
  return jax.jit(init).lower(key).compile(compiler_options=options)(key)


__all__ = ["CifarResNet", "PlainNet", "ImageNetResNet", "VisionTransformer", "Llama", "ResidualStack", "Layout", "build_model",
           "from_config", "cifar_layout", "num_params", "block_names", "keep_stats_of_inactive_blocks", "type_a_shortcut",
           "require_batch_norm", "init_variables"]
