"""The images a lesion sweep or a path analysis reads, for a CIFAR-10 or an ImageNet run alike.

Both engines hold their images in host memory and stream them to the devices in batches. CIFAR-10 fits
whole, so it loads as training loaded it. ImageNet does not: its test split is the configured evaluation
split (the first `test_size` images; the whole split, ~7.5 GB at 224 px, when test_size <= 0) and its
training split a fixed-seed random `train_size` images, all centre-cropped as in evaluation.
"""
from __future__ import annotations

from typing import Optional

from absl import logging

from resnet_ensembles import data as data_lib


def load(config, *, test_size: Optional[int] = None, train_size: int = 0, seed: int = 0
         ) -> dict[str, data_lib.Split]:
  """{"train", "test"} splits for the trained run whose config is `config`.

  test_size: None keeps the run's own setting (CIFAR-10: config.data.test_size; ImageNet: the whole split),
  0 the whole split. train_size: ImageNet training images to load (0: none); CIFAR-10 loads them all."""
  if config.model.name != "imagenet_resnet":
    from resnet_ensembles import train  # CIFAR-10 exactly as the run saw it
    if test_size is not None:
      config = config.copy_and_resolve_references()
      config.data.test_size = test_size
    return train.load_data(config)
  from resnet_ensembles import imagenet_data
  d = config.data
  size = d.image_size
  n_test = test_size or 0
  logging.info("ImageNet %s: loading %s images (%d px) into host memory", d.eval_split,
               n_test or imagenet_data.num_examples(d, d.eval_split), size)
  out = {"test": imagenet_data.load_arrays(d, d.eval_split, n_test, image_size=size)}
  empty = (out["test"][0][:0], out["test"][1][:0])
  out["train"] = (imagenet_data.load_arrays(d, d.train_split, train_size, image_size=size, shuffle=True, seed=seed)
                  if train_size > 0 else empty)
  return out
