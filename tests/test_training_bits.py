"""Pieces of training that the end-to-end runs do not pin down: ResNet-110's constant warm-up, TensorBoard
event files, and reading CIFAR-10 through TFDS."""
import glob
import os

import numpy as np
import pytest

from experiments.configs import cifar10 as cifar10_config
from resnet_ensembles.training import schedules


def test_resnet110_warms_up_at_0_01_for_400_steps_then_0_1():
  c = cifar10_config.get_config("resnet110")
  assert (c.warmup_steps, c.warmup_lr, c.learning_rate) == (400, 0.01, 0.1)
  lr = schedules.learning_rate_fn(c, steps_per_epoch=391)
  total = c.num_epochs * 391
  bounds = [int(f * total) for f in c.lr_boundaries]
  got = [float(lr(s)) for s in (0, 1, 399, 400, 401, bounds[0] - 1, bounds[0])]
  np.testing.assert_allclose(got, [0.01, 0.01, 0.01, 0.1, 0.1, 0.1, 0.1 * c.lr_decay], rtol=1e-6)
  assert cifar10_config.get_config("resnet56").warmup_steps == 0
  assert float(schedules.learning_rate_fn(cifar10_config.get_config("resnet56"), 391)(0)) == pytest.approx(0.1)


def test_metric_writer_writes_tensorboard_events_with_the_scalars(tmp_path):
  pytest.importorskip("tensorboardX")
  tf = pytest.importorskip("tensorflow")
  from resnet_ensembles.training import metrics
  w = metrics.MetricWriter(str(tmp_path))
  w.write(5, {"loss": 2.5, "lr": 0.1}, "train")
  w.write(10, {"loss": 1.25}, "train")
  w.write(10, {"test_error": 0.375}, "eval")
  w.close()
  files = glob.glob(os.path.join(tmp_path, "tensorboard", "events.out.tfevents.*"))
  assert len(files) == 1
  got = {}
  for event in tf.compat.v1.train.summary_iterator(files[0]):
    for value in event.summary.value:
      got[value.tag, event.step] = value.simple_value
  assert got == {("train/loss", 5): 2.5, ("train/lr", 5): pytest.approx(0.1), ("train/loss", 10): 1.25,
                 ("eval/test_error", 10): 0.375}
  assert [r["step"] for r in metrics.read_metrics(str(tmp_path))] == [5, 10, 10]


def test_tfds_split_is_read_as_uint8_images_and_int32_labels(monkeypatch):
  """`_load_tfds_split` against a stand-in `tfds.load` (TFDS's own mock_data crashes TensorFlow here on the
  batch_size=-1 path, and a prepared cifar10 needs a download): the call it makes and the arrays it returns;
  and a load that fails becomes one clear RuntimeError."""
  tfds = pytest.importorskip("tensorflow_datasets")
  import tensorflow as tf
  from resnet_ensembles.data import cifar10 as data
  rng = np.random.default_rng(0)
  images, labels = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 7)
  calls = []

  def load(name, **kw):
    calls.append((name, kw))
    return tf.data.Dataset.from_tensors((tf.constant(images), tf.constant(labels, tf.int64))).get_single_element()
  monkeypatch.setattr(tfds, "load", load)
  x, y = data._load_tfds_split("test")
  assert calls == [("cifar10", dict(split="test", batch_size=-1, as_supervised=True))]
  assert x.dtype == np.uint8 and y.dtype == np.int32 and np.array_equal(x, images) and np.array_equal(y, labels)

  def fail(name, **kw):
    raise OSError("no network")
  monkeypatch.setattr(tfds, "load", fail)
  with pytest.raises(RuntimeError, match=r"TFDS could not load cifar10 \(OSError: no network\); set CIFAR10_DIR"):
    data._load_tfds_split("train")


def test_progress_durations_count_days_instead_of_wrapping_at_24_hours():
  from resnet_ensembles.utils.logs import duration
  assert duration(0) == "00:00:00" and duration(59.6) == "00:01:00" and duration(3 * 3600 + 62) == "03:01:02"
  assert duration(86399) == "23:59:59" and duration(86400) == "1d 00:00:00"
  assert duration(3 * 86400 + 11 * 3600 + 37 * 60 + 16) == "3d 11:37:16" and duration(-5) == "00:00:00"
