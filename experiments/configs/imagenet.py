r"""ImageNet configs: bottleneck ResNet-50/101/152/200 with the standard recipe (Goyal et al. 2017).

  get_config("resnet50")           torchvision-style "original" ResNet-50 (25,557,032 parameters)
  get_config("resnet200")          He et al. 2016b pre-activation ResNet-200, the network Veit et al. lesion
  get_config("resnet101_preact"), get_config("resnet152_original"), ...: any depth with either variant
  get_config("resnet26")           two bottleneck blocks a stage (tests and smoke runs)

Recipe: SGD, momentum 0.9, Nesterov off, lr 0.1 x batch_size / 256 (linear scaling, follows
--config.batch_size), 5 linear warm-up epochs from 0 (`warmup_epochs`), weight decay 1e-4 (coupled, as
in train.py), 90 epochs, lr / 10 after epochs 30, 60 and 80 (`lr_schedule="step"`; `"cosine"` is the
alternative), label smoothing off.
Global batch 1024 (128 per chip on a v4-16 / v5e-8 pod slice of 8 chips), bfloat16 activations on
accelerators; every process streams its share of TFDS imagenet2012 (prepared, or `data.manual_dir`
holding the ILSVRC2012 tars) or of an image folder `data.folder/<split>/<class>/*.JPEG`.

`experiments/train.py` runs it through `resnet_ensembles.train_imagenet` (streamed tf.data input, the
same train_step, top-1/top-5 evaluation every epoch). On every host of a pod slice (README, "Running on a
pod"):

  python -m experiments.train --config=experiments/configs/imagenet.py:resnet200 --workdir=/mnt/runs/r200 \
      --config.data.tfds_data_dir=/mnt/tfds
"""
import ml_collections

from resnet_ensembles.models.imagenet import STAGE_BLOCKS, VARIANTS

_DEFAULT_VARIANT = {26: "original", 50: "original", 101: "original", 152: "original", 200: "preact"}


def _parse(arg: str) -> tuple[int, str]:
  base, _, variant = (arg or "resnet50").partition("_")
  depth = base[len("resnet"):]
  if not base.startswith("resnet") or not depth.isdigit() or int(depth) not in STAGE_BLOCKS or (
      variant and variant not in VARIANTS):
    raise ValueError(f"config arg must be {'|'.join(f'resnet{d}' for d in STAGE_BLOCKS)} with an optional _preact or "
                     f"_original suffix, got {arg!r}")
  return int(depth), variant or _DEFAULT_VARIANT[int(depth)]


def get_config(arg: str = "resnet50") -> ml_collections.ConfigDict:
  depth, variant = _parse(arg)
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(name="imagenet_resnet", depth=depth, variant=variant, width=64,
                                           num_classes=1000, dtype="bfloat16"))
  c.data = ml_collections.ConfigDict(dict(
      source="tfds", folder="", tfds_data_dir="", manual_dir="", train_split="train", eval_split="validation",
      image_size=224, shuffle_buffer=16_384))
  c.distributed = ml_collections.ConfigDict(dict(mode="auto", coordinator_address="", num_processes=0,
                                                 process_id=-1))
  c.seed = 0
  c.batch_size = 1024            # global, over all processes
  c.eval_batch_size = 1024
  c.num_epochs = 90
  c.base_learning_rate = 0.1     # per 256 images
  c.learning_rate = c.get_ref("base_learning_rate") * c.get_ref("batch_size") / 256
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.lr_schedule = "step"         # or "cosine"
  c.lr_boundaries = (30 / 90, 60 / 90, 80 / 90)   # fractions of training, as in cifar10.py
  c.lr_decay = 0.1
  c.warmup_epochs = 5            # linear from 0 (Goyal et al.); 0 turns it off
  c.train_mask = ml_collections.ConfigDict(dict(kind="none", p_L=0.5, num_active=0, scale_at_test=False,
                                                    per_example=False))
  c.log_every_steps = 100
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 1
  c.keep_checkpoints = 2
  c.max_steps = -1
  c.progress = True
  return c

