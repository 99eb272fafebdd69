"""ImageNet bottleneck ResNets (pinned sizes, masks/orders as on CIFAR), their config, and the input
pipeline on a tiny generated image folder (no TFDS download)."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import imagenet as imagenet_config
from resnet_ensembles.data import imagenet as imagenet_data
from resnet_ensembles.models import imagenet as im
from resnet_ensembles.training import metrics
from resnet_ensembles import models
from resnet_ensembles.parallel import mesh as sharding
from resnet_ensembles import training as train
from resnet_ensembles.training import schedules

X = jax.random.normal(jax.random.PRNGKey(7), (2, 32, 32, 3))


def _shapes(model, size=64):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))


@pytest.mark.parametrize("depth,variant,count", [(50, "original", 25_557_032), (101, "original", 44_549_160),
                                                 (152, "original", 60_192_808), (200, "preact", 64_673_960)])
def test_pinned_parameter_counts(depth, variant, count):
  assert models.num_params(_shapes(im.ImageNetResNet(depth, variant))["params"]) == count


def test_layout_of_resnet200():
  lay = im.imagenet_layout(200)
  assert lay.num_blocks == 66 and lay.stage_openers == (0, 3, 27, 63)  # the paper's blocks 1, 4, 28, 64
  assert lay.downsampling_blocks == (3, 27, 63) and len(lay.deletable_blocks) == 62
  assert lay.block_features[0] == 256 and lay.block_features[-1] == 2048 and lay.block_strides[27] == 2
  assert abs(im.imagenet_forward_macs(50) / 4.09e9 - 1) < 0.02


def test_bad_input_is_clear_before_tracing():
  with pytest.raises(ValueError, match="one of 26, 50, 101, 152, 200, got 34"):
    im.ImageNetResNet(34)
  with pytest.raises(ValueError, match="variant must be"):
    im.ImageNetResNet(50, "v2")
  with pytest.raises(ValueError, match="config arg must be"):
    imagenet_config.get_config("resnet18")
  c = imagenet_config.get_config("resnet50")
  c.batch_size = 0
  with pytest.raises(ValueError, match="batch_size .* is not a positive multiple"):
    train.train_and_evaluate(c, "/nonexistent/never/written")  # fails before any data is read
  c = imagenet_config.get_config("resnet50")
  c.data.image_size = 16
  with pytest.raises(ValueError, match="image_size must be >= 32"):
    train.train_and_evaluate(c, "/nonexistent/never/written")


def test_variable_names():
  v = _shapes(im.ImageNetResNet(50, "preact"))
  assert sorted(k for k in v["params"] if not k.startswith("block_")) == [
      "head", "head_bn", "proj_00", "proj_03", "proj_07", "proj_13", "stem_bn", "stem_conv"]
  assert sorted(v["params"]["block_05"]) == ["bn1", "bn2", "bn3", "conv1", "conv2", "conv3"]
  assert sorted(v["batch_stats"]["proj_03"]) == ["bn"] and len(models.block_names(im.imagenet_layout(50))) == 16


def test_config_builds_the_model():
  c = imagenet_config.get_config("resnet50")
  assert (c.model.variant, c.learning_rate, c.num_epochs, c.weight_decay) == ("original", 0.4, 90, 1e-4)
  assert imagenet_config.get_config("resnet200").model.variant == "preact"
  assert imagenet_config.get_config("resnet101_preact").model.variant == "preact"
  model = im.build_from_config(c)
  assert model.dtype == jnp.bfloat16 and models.num_params(_shapes(model)["params"]) == 25_557_032


# --- masks and orders on a narrow ResNet-50 (16 blocks; openers 0, 3, 7, 13) -------------------------

def _init(model, seed=0):
  """He-scaled random variables with non-trivial BatchNorm statistics, drawn with numpy: compiling the
  network's own initialiser costs ~15 s of CPU, these tests only need distinct, well-scaled values."""
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = path[-1].key
    if name == "kernel":
      return rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape).astype(np.float32)
    if name in ("scale", "var"):
      return np.exp(0.2 * rng.normal(size=s.shape)).astype(np.float32)
    return (0.1 * rng.normal(size=s.shape)).astype(np.float32)  # bias, mean
  return jax.tree_util.tree_map_with_path(draw, _shapes(model, 32))


def _reference(model, v, x, deleted=(), order=None):
  """Hand-built forward from the stored variables of each piece."""
  p, s = v["params"], v["batch_stats"]
  lay = model.layout
  sub = lambda mod, name, h, **kw: mod.apply({"params": p[name], "batch_stats": s[name]}, h, **kw)
  h = model.apply(v, x, method=model.embed)
  for pos in range(lay.num_blocks):
    blk = pos if order is None else int(order[pos])
    sc = sub(im.Projection(lay.block_features[pos], lay.block_strides[pos]), f"proj_{pos:02d}", h, train=False) \
        if pos in lay.stage_openers else h
    f = 0 if pos in deleted else sub(im.Bottleneck(lay.block_features[pos], lay.block_strides[pos], model.variant),
                                     f"block_{blk:02d}", h, train=False)
    h = sc + f
    h = nn.relu(h) if model.variant == "original" else h
  return model.apply(v, h, method=model.readout)


@pytest.fixture(scope="module", params=["preact", "original"])
def small(request):
  model = im.ImageNetResNet(50, request.param, num_classes=10, width=8)
  return model, _init(model)


def test_masks_delete_branches_and_keep_projections(small):
  model, v = small
  full = model.apply(v, X)
  np.testing.assert_allclose(full, _reference(model, v, X), rtol=1e-3, atol=1e-3)
  np.testing.assert_array_equal(model.apply(v, X, block_mask=jnp.ones(16)), full)
  apply = jax.jit(lambda m: model.apply(v, X, block_mask=m))
  for i in (0, 1, 3, 8):  # openers 0 (stride 1) and 3 (downsampling) keep proj(x); 1, 8 become identity
    mask = np.ones(16, np.float32)
    mask[i] = 0
    np.testing.assert_allclose(apply(mask), _reference(model, v, X, deleted=(i,)), rtol=1e-3, atol=1e-3)
  masks = (jax.random.uniform(jax.random.PRNGKey(3), (4, 16)) > 0.5).astype(jnp.float32)
  batched = jax.jit(jax.vmap(lambda m: model.apply(v, X, block_mask=m)))(masks)
  for m, out in zip(masks, batched):
    np.testing.assert_allclose(out, apply(m), rtol=1e-4, atol=1e-4)
  assert not np.allclose(batched[0], full)


def test_orders_move_block_parameters(small):
  model, v = small
  full = model.apply(v, X)
  np.testing.assert_array_equal(model.apply(v, X, block_order=np.arange(16)), full)
  order = np.arange(16)
  order[[4, 6]] = [6, 4]  # stage 1 is blocks 3..6 (3 is its opener)
  swapped = model.apply(v, X, block_order=order)
  assert not np.allclose(swapped, full)
  v2 = {c: dict(v[c]) for c in v}
  for c in v2:
    v2[c]["block_04"], v2[c]["block_06"] = v[c]["block_06"], v[c]["block_04"]
  np.testing.assert_allclose(swapped, model.apply(v2, X), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(swapped, _reference(model, v, X, order=order), rtol=1e-3, atol=1e-3)
  with pytest.raises(ValueError, match="stage opener"):
    model.apply(v, X, block_order=np.array([0, 1, 2, 4, 3] + list(range(5, 16))))


def test_training_with_a_deleted_opener_updates_only_its_projection_statistics(small):
  model, v = small
  mask = np.ones(16, np.float32)
  mask[3] = 0
  _, new = jax.jit(lambda v: model.apply(v, X, train=True, block_mask=mask, mutable=["batch_stats"]))(v)
  kept = models.keep_stats_of_inactive_blocks(v["batch_stats"], new["batch_stats"], mask)
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert same(kept["block_03"], v["batch_stats"]["block_03"])
  assert not same(kept["proj_03"], v["batch_stats"]["proj_03"])
  assert not same(kept["block_04"], v["batch_stats"]["block_04"])


# --- input pipeline ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  from PIL import Image
  root = tmp_path_factory.mktemp("imagenet")
  rng = np.random.default_rng(0)
  for split in ("train", "validation"):
    for c, name in enumerate(("n01", "n02", "n03")):
      (root / split / name).mkdir(parents=True)
      for j, (h, w) in enumerate([(48, 64), (80, 60), (50, 50)]):
        img = np.clip(rng.normal(80 * c + 40, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / split / name / f"img{j}.JPEG", quality=90)
  return ml_collections.ConfigDict(dict(source="folder", folder=str(root), tfds_data_dir="", manual_dir=""))


def test_train_batches_are_augmented_per_process_and_reproducible(image_folder):
  take = lambda seed, index=0: [b for _, b in zip(range(3), imagenet_data.train_batches(
      image_folder, "train", 4, seed=seed, image_size=32, shuffle_buffer=16, process_index=index, process_count=2))]
  a, b, other = take(0), take(0), take(1)
  assert a[0]["image"].shape == (4, 32, 32, 3) and a[0]["image"].dtype == np.uint8
  assert all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, b))
  assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, other))
  labels = np.concatenate([x["label"] for x in take(0, 1)])
  assert set(labels) <= {0, 1, 2} and len(labels) == 12
  # What each process streams from: disjoint shares of the split that together hold every image once.
  shares = [[(bytes(b), int(y)) for b, y in imagenet_data._source(image_folder, "train", p, 2, shuffle_files=True,
                                                                  seed=p)[0].as_numpy_iterator()] for p in range(2)]
  files = imagenet_data.folder_files(image_folder.folder, "train")[0]
  everything = sorted(open(f, "rb").read() for f in files)
  assert len(shares[0]) + len(shares[1]) == len(files) == 9
  assert not {b for b, _ in shares[0]} & {b for b, _ in shares[1]}
  assert sorted(b for share in shares for b, _ in share) == everything
  # The global batch of a 1-process mesh, normalised on device, runs the model.
  mesh = sharding.data_mesh()
  batch = sharding.global_batch(a[0], mesh, 4)
  model = im.ImageNetResNet(26, num_classes=3, width=8)
  v = _init(model)
  assert np.isfinite(jax.jit(lambda v, x: model.apply(v, imagenet_data.normalize(x)))(v, batch["image"])).all()


def test_eval_batches_cover_the_split_once_across_processes(image_folder):
  parts = [list(imagenet_data.eval_batches(image_folder, "validation", 2, image_size=32, process_index=p,
                                           process_count=2)) for p in range(2)]
  assert len(parts[0]) == len(parts[1]) == 3  # ceil(ceil(9 / 2) / 2): every process steps together
  w = np.concatenate([b["weight"] for part in parts for b in part])
  y = np.concatenate([b["label"] for part in parts for b in part])
  assert w.sum() == 9 and sorted(y[w > 0]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  images = [np.concatenate([b["image"][b["weight"] > 0] for b in part]) for part in parts]
  assert [len(i) for i in images] == [5, 4]  # files 0, 2, 4, ... and 1, 3, ...: no image in both shares
  assert not {i.tobytes() for i in images[0]} & {i.tobytes() for i in images[1]}
  assert len({i.tobytes() for part in images for i in part}) == 9
  assert imagenet_data.num_examples(image_folder, "validation") == 9


def test_eval_crop_is_central(tmp_path):
  from PIL import Image
  import tensorflow as tf
  ramp = np.broadcast_to((2 * np.arange(96))[None, :, None], (64, 96, 3)).astype(np.uint8)
  Image.fromarray(ramp).save(tmp_path / "ramp.png")  # lossless: the non-JPEG decode path
  out = imagenet_data.preprocess_eval(tf.io.read_file(str(tmp_path / "ramp.png")), 32).numpy()
  # side 32 / (32 + 32) * 64 = 32 centred: columns 32..63, values 64..126 (resized 32 -> 32: unchanged)
  assert out.shape == (32, 32, 3) and out.min() == 64 and out.max() == 126


def test_unprepared_tfds_and_bad_source_are_clear(tmp_path):
  c = ml_collections.ConfigDict(dict(source="tfds", folder="", tfds_data_dir=str(tmp_path), manual_dir=""))
  with pytest.raises(RuntimeError, match="not prepared"):
    next(imagenet_data.eval_batches(c, "validation", 2, process_index=0, process_count=1))
  c.source = "s3"
  with pytest.raises(ValueError, match="source must be one of"):
    next(imagenet_data.eval_batches(c, "validation", 2, process_index=0, process_count=1))


# --- training ---------------------------------------------------------------------------------------

def test_imagenet_config_trains_resumes_and_reports_top_k(image_folder, tmp_path):
  c = imagenet_config.get_config("resnet26")  # the trainer is depth-blind: 8 blocks, not 16
  c.model.update(width=8, num_classes=12, dtype="float32")  # 12 outputs (3 used): top-5 is not always right
  c.data.update(source="folder", folder=image_folder.folder, image_size=32, shuffle_buffer=8)
  c.batch_size, c.eval_batch_size, c.num_epochs, c.warmup_epochs = 4, 4, 2, 1
  c.log_every_steps, c.progress, c.max_steps = 1, False, 3
  first = train.train_and_evaluate(c, str(tmp_path))       # 9 images // 4 = 2 steps an epoch; stops at 3
  assert first["step"] == 3 and sorted(k for k in first if k.startswith("test_")) == [
      "test_error", "test_loss", "test_top5_error"]
  # Both errors against the trained network's own logits on the 9 validation images, counted here.
  batch = next(imagenet_data.eval_batches(image_folder, "validation", 9, image_size=32, process_index=0,
                                          process_count=1))
  state = first["state"]
  logits = np.asarray(jax.jit(im.build_from_config(c).apply)({"params": state.params, "batch_stats": state.batch_stats},
                                                             imagenet_data.normalize(batch["image"])))
  y = batch["label"]
  top5 = np.argsort(-logits, -1)[:, :5]
  np.testing.assert_allclose(first["test_error"], np.mean(np.argmax(logits, -1) != y), atol=1e-6)
  np.testing.assert_allclose(first["test_top5_error"], np.mean(~np.any(top5 == y[:, None], -1)), atol=1e-6)
  assert first["test_top5_error"] <= first["test_error"]
  c.max_steps = -1
  second = train.train_and_evaluate(c, str(tmp_path))      # resumes at step 3, finishes epoch 2
  assert second["step"] == 4 and second["epoch"] == 2
  rows = metrics.read_metrics(str(tmp_path))
  lrs = [r["train/lr"] for r in rows if "train/lr" in r]
  np.testing.assert_allclose(lrs[:2], [0.0, 4 * 0.1 / 256 / 2], rtol=1e-6)  # linear warm-up over epoch 1
  assert np.isfinite([r["train/loss"] for r in rows if "train/loss" in r]).all()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "4"]


def test_learning_rate_schedules():
  c = ml_collections.ConfigDict(dict(num_epochs=4, learning_rate=0.4, lr_schedule="cosine", warmup_epochs=1,
                                     lr_boundaries=(0.5,), lr_decay=0.1))
  lr = schedules.learning_rate_fn(c, steps_per_epoch=10)
  # linear to 0.4 over epoch 1, then a cosine over the remaining 30 steps: no jump where they meet
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(20), lr(25), lr(40)],
                             [0.0, 0.2, 0.4, 0.4 * (1 + np.cos(np.pi / 3)) / 2, 0.2, 0.0], atol=1e-6)
  c.warmup_epochs = 0
  lr = schedules.learning_rate_fn(c, steps_per_epoch=10)
  np.testing.assert_allclose([lr(0), lr(20), lr(40)], [0.4, 0.2, 0.0], atol=1e-6)
  c.lr_schedule, c.warmup_epochs = "step", 1  # linear warm-up over epoch 1, then steps at 0.5 of training
  lr = schedules.learning_rate_fn(c, steps_per_epoch=10)
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(19), lr(20), lr(39)], [0.0, 0.2, 0.4, 0.4, 0.04, 0.04],
                             rtol=1e-6, atol=1e-7)
  c.warmup_epochs = 0
  lr = schedules.learning_rate_fn(c, steps_per_epoch=10)
  np.testing.assert_allclose([lr(0), lr(19), lr(20)], [0.4, 0.4, 0.04], rtol=1e-6)
  c.lr_schedule = "linear"
  with pytest.raises(ValueError, match="lr_schedule must be"):
    schedules.learning_rate_fn(c, steps_per_epoch=10)


def test_lesion_sweeps_and_path_decomposition_run_on_a_bottleneck_net():
  """The engines take an ImageNet model unchanged: top-5 above 10 classes, ImageNet input statistics,
  the wavefront equals the vmapped sweep, and the G_k sum to the gradient through projection openers."""
  from resnet_ensembles.data import cifar10 as data
  from resnet_ensembles.lesion import sweep as lesion
  from resnet_ensembles.lesion import masks
  from resnet_ensembles.paths import analysis as paths
  model = im.ImageNetResNet(26, num_classes=12, width=4)  # 8 blocks, openers 0, 2, 4, 6
  v = _init(model)
  rng = np.random.default_rng(0)
  split = (rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), rng.integers(0, 12, 6).astype(np.int32))
  stack = masks.single_deletions(model.layout)[0]
  out = lesion.evaluate(model, v, split, stack, batch_size=6)
  wave = lesion.single_deletion_sweep(model, v, split, batch_size=6)
  np.testing.assert_allclose(wave["error"], out["error"], atol=1e-12)
  assert out["top5_error"].shape == (model.layout.num_blocks,)
  np.testing.assert_allclose(wave["top5_error"], out["top5_error"], atol=1e-12)
  for i in (1, 4):  # top-1 and top-5 of two lesioned networks (a block, an opener), counted here from their logits
    logits = np.asarray(jax.jit(lambda m: model.apply(v, imagenet_data.normalize(split[0]), block_mask=m))(stack[i]))
    in5 = np.any(np.argsort(-logits, -1)[:, :5] == split[1][:, None], -1)
    assert out["error"][i] == pytest.approx(np.mean(np.argmax(logits, -1) != split[1]), abs=1e-12)
    assert out["top5_error"][i] == pytest.approx(1 - np.mean(in5), abs=1e-12)
  assert len(set(out["top5_error"].tolist())) > 1 and not np.array_equal(out["top5_error"], out["error"])
  x = data.normalize_for(model, split[0])
  np.testing.assert_allclose(x, imagenet_data.normalize(split[0]))
  tape = paths.forward_tape(model, v, x, split[1])
  g_x, _ = paths.decompose(tape)
  full = paths.full_gradient(tape)[0]
  np.testing.assert_allclose(g_x.sum(0), full, atol=1e-5 * float(jnp.abs(full).max()))


def test_lesion_memory_estimate_follows_the_input():
  from resnet_ensembles.lesion import common as lesion_common
  r50, r20 = im.ImageNetResNet(50), models.CifarResNet(20)
  # ResNet-50 at 224: the first stage holds 56 x 56 x 256 values per image; CIFAR: 32 x 32 x 16.
  assert lesion_common.activation_bytes(r50, image_hw=(224, 224)) == 6 * 56 * 56 * 256 * 4
  assert lesion_common.activation_bytes(r20) == 6 * 32 * 32 * 16 * 4


def test_load_trained_builds_an_imagenet_model(tmp_path):
  from resnet_ensembles.store import checkpoints
  c = imagenet_config.get_config("resnet50")
  c.model.update(width=4, num_classes=12, dtype="float32")
  model = im.build_from_config(c)
  path = checkpoints.export_variables(_init(model), c, str(tmp_path / "r50"))
  loaded, v, config = checkpoints.load_trained(path)
  assert isinstance(loaded, im.ImageNetResNet) and loaded.layout.num_blocks == 16 and config.model.width == 4
  logits = jax.jit(lambda v, x: loaded.apply(v, imagenet_data.normalize(x)))(v, np.zeros((1, 32, 32, 3), np.uint8))
  assert np.isfinite(logits).all()


def test_study_data_and_a_recalibrated_sweep_read_an_imagenet_run(image_folder, tmp_path):
  """study_data (what experiments/lesion.py and paths.py load) takes the run's ImageNet split, centre-cropped
  at its image size, and a seeded draw of training images that a recalibrated lesion sweep then uses."""
  from resnet_ensembles.store import checkpoints
  from resnet_ensembles.lesion import study as lesion_study
  from resnet_ensembles.data import for_run as study_data
  c = imagenet_config.get_config("resnet26")
  c.model.update(width=4, num_classes=3, dtype="float32")
  c.data.update(source="folder", folder=image_folder.folder, image_size=32)
  path = checkpoints.export_variables(_init(im.build_from_config(c)), c, str(tmp_path / "r50"))
  data = study_data.load_for_study(checkpoints.read_config(path), train_size=5, seed=1)
  (tx, ty), (rx, ry) = data["test"], data["train"]
  assert tx.shape == (9, 32, 32, 3) and tx.dtype == np.uint8 and list(ty) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert rx.shape == (5, 32, 32, 3) and set(ry) <= {0, 1, 2}
  again = study_data.load_for_study(checkpoints.read_config(path), test_size=4, train_size=5, seed=1)
  assert np.array_equal(again["train"][0], rx) and np.array_equal(again["test"][0], tx[:4])
  assert not np.array_equal(study_data.load_for_study(c, test_size=1, train_size=5, seed=2)["train"][0], rx)
  out = lesion_study.sweep_network(path, "ResNet", data, "multi", bn="recalibrate", num_samples=1, max_k=1,
                                   batch_size=9, recal_batches=1, recal_batch_size=5)
  assert len(out["rows"]) == 1 and out["rows"][0]["k"] == 1
  # Recalibrated on one batch of the 5 drawn training images and tested on those same 5, a lesioned network's
  # statistics are that batch's own: its predictions are the training-mode forward pass's (batch statistics).
  same = lesion_study.sweep_network(path, "ResNet", {"train": (rx, ry), "test": (rx, ry)}, "multi",
                                    bn="recalibrate", num_samples=1, max_k=1, batch_size=5, recal_batches=1,
                                    recal_batch_size=5)
  model, v, _ = checkpoints.load_trained(path)
  mask = np.ones(model.layout.num_blocks, np.float32)
  mask[same["rows"][0]["deleted"]] = 0
  x = imagenet_data.normalize(rx)
  train_mode, _ = jax.jit(lambda v: model.apply(v, x, train=True, block_mask=mask, mutable=["batch_stats"]))(v)
  stored = jax.jit(lambda v: model.apply(v, x, block_mask=mask))(v)
  assert same["rows"][0]["error"] == pytest.approx(float(np.mean(np.argmax(train_mode, -1) != ry)))
  assert not np.allclose(train_mode, stored, atol=1e-3)  # which the stored statistics do not give


def test_lesion_and_path_clis_run_on_an_imagenet_run(image_folder, tmp_path):
  """experiments.lesion and experiments.paths as subprocesses (absl flags, JSON, figures) on an exported tiny
  ImageNet ResNet-26 reading the image folder its config names."""
  import json
  import subprocess
  import sys
  from resnet_ensembles.store import checkpoints
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  c = imagenet_config.get_config("resnet26")
  c.model.update(width=4, num_classes=3, dtype="float32")
  c.data.update(source="folder", folder=image_folder.folder, image_size=32)
  path = checkpoints.export_variables(_init(im.build_from_config(c)), c, str(tmp_path / "r50"))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  main = lambda *args: subprocess.Popen([sys.executable, "-m", *args], cwd=root, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  out, paths_out = tmp_path / "out", tmp_path / "paths_out"  # one folder each: each main locks its own
  lesion = main("experiments.lesion", f"--workdir={path}", "--sweep=multi", "--num_samples=2", "--max_k=2",
                "--test_size=0", "--batch_size=9", f"--output_dir={out}")
  paths_run = main("experiments.paths", f"--workdir={path}", "--config=experiments/configs/paths.py:quick",
                   "--config.samples_per_length=2", "--config.num_batches=1", "--config.batch_size=4",
                   "--config.route_chunk=8", f"--output_dir={paths_out}")
  (_, le), (po, pe) = lesion.communicate(timeout=600), paths_run.communicate(timeout=600)
  assert lesion.returncode == 0, le[-2000:]
  assert paths_run.returncode == 0 and "effective paths" in po, pe[-2000:]
  multi = json.load(open(out / "multi_stored.json"))
  net = multi["networks"][0]
  assert multi["test_images"] == 9 and net["num_blocks"] == 8 and net["model"]["name"] == "imagenet_resnet"
  assert [r["k"] for r in net["rows"]] == [1, 1, 2, 2]
  # each row's error is the lesioned network's on the 9 images, recomputed here in one forward pass
  model, v, _ = checkpoints.load_trained(path)
  from resnet_ensembles.data import for_run
  images, labels = for_run.load_for_study(checkpoints.read_config(path), test_size=0)["test"]  # as the main reads
  x = imagenet_data.normalize(images)
  forward = jax.jit(lambda m: model.apply(v, x, block_mask=m))
  for r in [{"deleted": []}] + net["rows"]:
    mask = np.ones(8, np.float32)
    mask[r["deleted"]] = 0
    want = float(np.mean(np.argmax(forward(mask), -1) != labels))
    assert r.get("error", net["full_error"]) == pytest.approx(want), r
  import csv
  table = list(csv.DictReader(open(out / "multi_stored.csv")))  # the CSV holds the JSON's rows
  assert [float(t["error"]) for t in table] == [net["full_error"]] + [r["error"] for r in net["rows"]]
  assert [t["deleted"] for t in table[1:]] == [" ".join(map(str, r["deleted"])) for r in net["rows"]]
  assert not (out / "multi_stored.json.partial").exists()  # the sweep's chunks go once its JSON is written
  p = json.load(open(paths_out / "paths.json"))
  assert p["num_blocks"] == 8 and len(p["sampled"]["image_mean"]) == 9
  from PIL import Image
  for png in (out / "multi_stored.png", paths_out / "paths.png"):  # figures with something drawn in them
    pixels = np.asarray(Image.open(png).convert("L"))
    assert min(pixels.shape) > 200 and pixels.std() > 10, png
