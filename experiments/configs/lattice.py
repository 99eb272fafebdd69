r"""The lesion lattice study (experiments/lattice.py): exact Shapley values, interactions, additivity and the
cheap pruning scores of every network the project has.

  python -m experiments.lattice --config=experiments/configs/lattice.py:cpu --out_dir=results/lattice

Presets:
  cpu   cheapest first: the imported and fine-tuned ResNet-20 (9 blocks: full lattice), the ViT trained here
        (12 sublayers: full lattice), the own pre-activation ResNet-32 and its plain counterpart (15 blocks:
        lattice over the 12 non-openers), the imported and fine-tuned ResNet-56 (27 blocks: permutation-sampled
        Shapley values); one fixed subset of `test_images` test images for all, stored BatchNorm statistics;
        the pretrained llama2.c stories260K (10 sublayers: full lattice) on the first `text_windows` windows
        of `window` tokens of its evaluation text, loss in nats/token, disagreement with the intact model.
  tiny  test-sized (networks given by --config.networks, see tests/test_lattice.py).
A network is one line of `networks` (name -> trained folder; a language model: its checkpoint, and one line of
`texts`) and, unless it takes the default (full lattice of
n <= 12 branches, else the non-openers), one of `modes` ("sampled") or `positions`.
"""
import os

import ml_collections

STORIES = "../shared/data/pretrained/llama2c-stories260K"


def get_config(arg: str = "cpu") -> ml_collections.ConfigDict:
  if arg not in ("cpu", "tiny"):
    raise ValueError(f"lattice config arg must be cpu or tiny; got {arg!r}")
  c = ml_collections.ConfigDict()
  cpu = arg == "cpu"
  c.networks = ml_collections.ConfigDict({
      "resnet20": "results/depth_series/finetuned/resnet20",
      "vit": "results/vit/vit_s6n",
      "resnet32": "results/repro/train/resnet",
      "plain32": "results/repro/train/plain",
      "resnet56": "results/depth_series/finetuned/resnet56",
      "stories260k": f"{STORIES}/stories260K.bin",
  } if cpu else {})
  c.order = ["resnet20", "vit", "resnet32", "plain32", "resnet56", "stories260k"] if cpu else []   # cheapest first
  # language models: name -> their tokenizer and evaluation text (the network's path is its llama2.c checkpoint)
  c.texts = ml_collections.ConfigDict({"stories260k": {"tokenizer": f"{STORIES}/tok512.bin",
                                                       "text": f"{STORIES}/tinystories/valid_first1000.txt"}}
                                      if cpu else {})
  c.labels = ml_collections.ConfigDict({
      "resnet20": "ResNet-20 (imported, fine-tuned)", "vit": "ViT (6 layers, 12 sublayers)",
      "resnet32": "ResNet-32 (own, pre-act)", "plain32": "plain-32 (own)",
      "resnet56": "ResNet-56 (imported, fine-tuned)", "stories260k": "stories260K (Llama, 5 layers, 10 sublayers)"})
  c.modes = ml_collections.ConfigDict({"resnet56": "sampled"} if cpu else {})
  c.positions = ml_collections.ConfigDict({})   # name -> list of block indices (default: see above)
  c.data_folder = os.environ.get("CIFAR10_DIR", "")
  c.test_images = 128 if cpu else 40
  c.subset_seed = 1            # which test images: data.cifar10.subset(test, test_images, subset_seed)
  c.seed = 0                   # permutations and bootstrap resamples
  c.num_permutations = 6 if cpu else 4
  c.batch_size = 16 if cpu else 8
  c.memory_budget_mb = 512
  c.window = 512 if cpu else 12    # a language model's evaluation: the first text_windows windows of its text
  c.text_windows = 8 if cpu else 2
  c.text_batch = 4                 # windows per batch
  return c
