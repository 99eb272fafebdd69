r"""The ViT study (experiments/vit_study.py): the paper's lesions and path analysis on a ViT's residual stream,
Sun et al.'s layer lesions, and the comparison with a ResNet of similar test error.

  python -m experiments.vit_study --config=experiments/configs/vit_study.py:cpu --workdir=runs/vit_study

Presets:
  cpu   the ViT trained here (results/vit/vit_s6n: 6 layers, 12 residual branches): single deletions of every
        sublayer and whole layer, Sun et al.'s layer lesions (every span in parallel; the middle N layers
        skipped, reversed, shuffled) on all 10,000 test images; k deletions (10 per k, every k) and layer
        reorderings (10 per swap count, 1..10 swaps) on 5,000; the path analysis with the `cpu` paths preset.
        Compared with the ResNet whose depth-series sweeps are in `compare_with`.
  tiny  test-sized (networks given by --config.networks, see tests/test_vit_study.py).
The ViT has no BatchNorm: every sweep runs with the network as trained (bns = stored only).
"""
import ml_collections

from experiments.configs import depth_series


def get_config(arg: str = "cpu") -> ml_collections.ConfigDict:
  if arg not in ("cpu", "tiny"):
    raise ValueError(f"vit_study config arg must be cpu or tiny; got {arg!r}")
  c = depth_series.get_config(arg)
  c.networks = ml_collections.ConfigDict({"vit": "results/vit/vit_s6n"} if arg == "cpu" else {})
  # the depth series' labels name the ResNet by its folder's name (own_resnet32, resnet20, ...); else "ResNet"
  c.labels.vit = "ViT (6 layers, 12 branches)"
  c.order, c.fit_networks = ["vit"] if arg == "cpu" else [], []
  c.bns = ("stored",)
  c.sweeps = ("single", "layers", "painters", "multi", "reorder")
  c.layers = ml_collections.ConfigDict(dict(test_images=c.single.test_images))
  c.painters = ml_collections.ConfigDict(dict(test_images=c.single.test_images, seed=0))
  if arg == "cpu":
    c.multi.test_images = c.reorder.test_images = 5000
    c.reorder.max_k = 10
  # the ResNet beside it: a folder of depth-series sweeps (single/multi/reorder_stored.json, paths.json)
  c.compare_with = "results/depth_series/own_resnet32"
  return c
