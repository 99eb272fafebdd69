r"""CIFAR-10 training configs for the small pre-LN Vision Transformer (`models.vit`).

  python -m experiments.train --config=experiments/configs/vit.py:s6n,epochs=35 --workdir=runs/vit_s6n

The argument is a size followed by comma-separated modifiers:
  tiny    2 layers, width 32, 2 heads, MLP 64 (tests and smoke runs)
  s4      4 layers, width 128, 4 heads, MLP 256
  s6      6 layers, width 192, 3 heads, MLP 384 (ViT-Tiny's width)
  s6n     6 layers, width 128, 4 heads, MLP 256 (s4's layers, s6's depth; the CPU choice: s6n,epochs=35,
          ~3.8 h of a 2-core CPU, benchmarks/README.md)
  s8      8 layers, width 256, 4 heads, MLP 512
Every size embeds 4x4 patches (64 tokens) and mean-pools the tokens. Modifiers: `quick` (1 epoch on 5,000
training images, 2,000 test images), `epochs=N`.

Recipe (transformers train differently from the paper's ResNets): AdamW (lr 1e-3 at batch 128, decoupled
weight decay 0.05 on weight matrices), linear warm-up then cosine decay to 0, gradient clipping at norm 1,
label smoothing 0.1; each step's gradient in 4 microbatches of 32 (`train_step(microbatches=...)`: the same
step, 1.2-1.3x the throughput here, benchmarks/vit_throughput.py). Augmentation is the ResNets' (4-pixel pad, random crop, flip): on a budget of a few
tens of epochs a ViT this small underfits rather than overfits, so stronger augmentation (RandAugment,
mixup), which pays off over hundreds of epochs, would only slow it down here.
Any field can be overridden: --config.num_epochs=3 --config.data.folder=/path/to/cifar10-jpeg.
"""
import ml_collections

SIZES = {  # depth (layers), width, heads, mlp_dim
    "tiny": (2, 32, 2, 64),
    "s4": (4, 128, 4, 256),
    "s6": (6, 192, 3, 384),
    "s6n": (6, 128, 4, 256),
    "s8": (8, 256, 4, 512),
}


def get_config(arg: str = "s6") -> ml_collections.ConfigDict:
  parts = [p for p in (arg or "s6").split(",") if p]
  if not parts or parts[0] not in SIZES:
    raise ValueError(f"config arg must start with a size in {sorted(SIZES)} (then ,quick or ,epochs=N); got {arg!r}")
  depth, width, heads, mlp_dim = SIZES[parts[0]]
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(name="vit", depth=depth, width=width, heads=heads, mlp_dim=mlp_dim,
                                           patch=4, num_classes=10, dtype="float32"))
  c.data = ml_collections.ConfigDict(dict(source="auto", folder="", cache_dir="", train_size=0,
                                          test_size=0, subset_seed=0))
  c.seed = 0
  c.batch_size = 128
  c.eval_batch_size = 500
  c.num_epochs = 50
  c.optimizer = "adamw"
  c.learning_rate = 1e-3
  c.beta1, c.beta2 = 0.9, 0.999
  c.weight_decay = 0.05
  c.grad_clip_norm = 1.0
  c.microbatches = 4  # the same step in 4 slices of 32: exact without BatchNorm, faster on this CPU's caches
  c.label_smoothing = 0.1
  c.lr_schedule = "cosine"
  c.warmup_epochs = 3.0
  c.train_mask = ml_collections.ConfigDict(dict(kind="none", p_L=0.5, num_active=0, scale_at_test=False,
                                                per_example=False))
  c.log_every_steps = 50
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 1
  c.keep_checkpoints = 2
  c.max_steps = -1
  c.progress = True
  for mod in parts[1:]:
    if mod == "quick":
      c.num_epochs, c.data.train_size, c.data.test_size, c.log_every_steps = 1, 5000, 2000, 10
      c.warmup_epochs = 0.2
    elif mod.startswith("epochs=") and mod[len("epochs="):].isdigit():
      c.num_epochs = int(mod[len("epochs="):])
    else:
      raise ValueError(f"unknown config modifier {mod!r} (known: quick, epochs=N)")
  return c
