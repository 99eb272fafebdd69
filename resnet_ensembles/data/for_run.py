"""The images a run reads: `load` for training (and what it records about them), `load_for_study` for a
lesion sweep or a path analysis of a trained CIFAR-10 or ImageNet run.

What a data folder is (its name in reports) comes from the folder itself (`describe_folder`): a
`dataset.json` in it with a "description", else a known copy recognised by its content (file names and
sizes), else its path. Both engines hold their images in host memory and stream them to the devices in batches. CIFAR-10 fits
whole, so it loads as training loaded it. ImageNet does not: its test split is the configured evaluation
split (the first `test_size` images; the whole split, ~7.5 GB at 224 px, when test_size <= 0) and its
training split a fixed-seed random `train_size` images, all centre-cropped as in evaluation.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import jax
from absl import logging

from resnet_ensembles.data import cifar10 as data_lib, pack
from resnet_ensembles.data.folder import describe, folder_fingerprint


def describe_folder(root: str) -> str:
  """The name results give the data in `root`: a pack's header, else `data.folder.describe` (its dataset.json,
  a known copy, or its path)."""
  if pack.is_pack(root):
    return pack.read_pack_info(root)["description"]
  if not os.path.isdir(root):  # the loader says what is wrong with it
    return f"CIFAR-10 (image folder {root})"
  return describe(root)


def identity(source: str, folder: Optional[str] = None) -> str:
  """What CIFAR-10 copy `source`/`folder` (resolved as the loader resolves them) holds, independent of where it
  lies, so that a study keeps its stages when the same data sits at another path: "folder:<fingerprint>" (file
  names and sizes, `folder_fingerprint`), "pack:<sha256 of its splits' image bytes>", or "tfds:cifar10". A path
  that is neither a folder nor a file is named by its path (the loader says what is wrong when it reads it)."""
  kind, path = data_lib.resolve_source(source, folder or None)
  if kind == "tfds":
    return "tfds:cifar10"
  if os.path.isfile(path):
    splits = pack.read_pack_info(path)["splits"]
    blob = "".join(f"{split}:{splits[split]['sha256']}\n" for split in sorted(splits))
    return "pack:" + hashlib.sha256(blob.encode()).hexdigest()[:16]
  if os.path.isdir(path):
    return "folder:" + folder_fingerprint(path)
  return "path:" + path


def load(config, workdir: Optional[str] = None) -> dict[str, data_lib.Split]:
  """The configured CIFAR-10 splits (subsets as configured); records in workdir/data.json what was read."""
  d = config.data
  out = data_lib.load_cifar10(d.source, d.folder or None, d.cache_dir or None)
  if workdir and jax.process_index() == 0:
    kind, folder = data_lib.resolve_source(d.source, d.folder or None)
    desc = "CIFAR-10 (TFDS cifar10)" if kind == "tfds" else describe_folder(folder)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "data.json"), "w") as f:
      json.dump({"description": desc, "source": kind, "folder": folder}, f)
  out["train"] = data_lib.subset(out["train"], d.train_size, d.subset_seed)
  out["test"] = data_lib.subset(out["test"], d.test_size, d.subset_seed + 1)
  return out


def load_for_study(config, *, test_size: Optional[int] = None, train_size: int = 0, seed: int = 0
         ) -> dict[str, data_lib.Split]:
  """{"train", "test"} splits for the trained run whose config is `config`.

  test_size: None keeps the run's own setting (CIFAR-10: config.data.test_size; ImageNet: the whole split),
  0 the whole split. train_size: ImageNet training images to load (0: none); CIFAR-10 loads them all."""
  if config.model.name != "imagenet_resnet":
    if test_size is not None:  # CIFAR-10 exactly as the run saw it
      config = config.copy_and_resolve_references()
      config.data.test_size = test_size
    return load(config)
  from resnet_ensembles.data import imagenet as imagenet_data
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
