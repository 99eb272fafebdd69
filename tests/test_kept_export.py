"""The reproduction's train stage keeps a finished run committed as its exported network alone
(results/repro/train/<run>: variables.msgpack, config, metrics; no orbax checkpoint): it evaluates it and does
not train it again. An unfinished run, or one of another model, goes to training as before. Random images:
no data needed."""
import json
import os

import jax
import numpy as np

from experiments.configs import reproduce as reproduce_config
from resnet_ensembles import models
from resnet_ensembles.store import checkpoints
from resnet_ensembles.study import stages
from resnet_ensembles.training import cifar as cifar_training


def _data():
  rng = np.random.default_rng(0)
  split = lambda n: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32))
  return stages.DataCache({"train": split(256), "test": split(100)})


def _exported_run(config, workdir, run, last_step):
  cfg = stages.train_config(config, run)
  model = models.from_config(cfg)
  variables = models.init_variables(model, jax.random.key(1))
  run_dir = os.path.join(workdir, "train", run)
  checkpoints.export_variables(variables, cfg, run_dir)
  with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
    for step in range(1, last_step + 1):
      f.write(json.dumps({"step": step, "train/loss": 1.0}) + "\n")
  return cfg, model, variables, run_dir


def test_finished_exported_run_is_kept_not_retrained(tmp_path, monkeypatch, capsys):
  config = reproduce_config.get_config("tiny")
  workdir, data = str(tmp_path), _data()
  trained = []
  monkeypatch.setattr(stages.training, "train_and_evaluate",
                      lambda cfg, run_dir, data=None: trained.append(run_dir) or {"step": 8, "test_error": 0.5})

  # finished (1 epoch of 256 images at batch 32 = 8 steps): evaluated from variables.msgpack, not trained
  cfg, model, variables, run_dir = _exported_run(config, workdir, "short_fwd", 8)
  files = lambda: sorted(set(os.listdir(run_dir)) - {".lock"})  # store.lock leaves its (ignored) file
  before = files(), open(os.path.join(run_dir, "metrics.jsonl")).read()
  assert stages.finished_export(cfg, run_dir, 256) == 8
  stages.train_run(config, workdir, data, "short_fwd")
  assert trained == []
  want = cifar_training.evaluate_trained(cfg, model, variables, data(cfg)["test"])["test_error"]
  assert f"short_fwd: step 8, test error {100 * want:.2f}%" in capsys.readouterr().out
  t = stages.read_json(os.path.join(run_dir, stages.TREATMENTS))  # forward short paths: both treatments
  assert t["num_blocks"] == 9 and 0 <= t["scaled_error"] <= 1
  after = files(), open(os.path.join(run_dir, "metrics.jsonl")).read()
  assert after == (sorted(before[0] + [stages.TREATMENTS]), before[1])  # no checkpoint, no start, no metrics
  assert checkpoints.fingerprint(checkpoints.load_trained(run_dir)[1]) == checkpoints.fingerprint(variables)

  # unfinished (4 of 8 steps) and without a checkpoint: trains as before
  cfg, _, _, run_dir = _exported_run(config, workdir, "resnet", 4)
  assert stages.finished_export(cfg, run_dir, 256) is None
  stages.train_run(config, workdir, data, "resnet")
  assert trained == [run_dir]

  # finished, but a checkpoint is there (a run in training's folder): training resumes from it, as before
  cfg, _, _, run_dir = _exported_run(config, workdir, "plain", 8)
  os.makedirs(os.path.join(run_dir, "checkpoints", "8"))
  assert stages.finished_export(cfg, run_dir, 256) is None
  os.rmdir(os.path.join(run_dir, "checkpoints", "8"))
  assert stages.finished_export(cfg, run_dir, 256) == 8
  assert stages.finished_export(stages.train_config(config, "resnet"), run_dir, 256) is None  # another model
  assert stages.finished_export(cfg, run_dir, 512) is None                                     # another length


def test_imported_folder_without_weights_names_the_import_command(tmp_path):
  """results/depth_series/imported/*/variables.msgpack is git-ignored: a folder without it says how to get it."""
  import pytest
  from experiments.configs import finetune
  folder = tmp_path / "resnet20"
  folder.mkdir()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, "results", "depth_series", "imported", "resnet20", "config.json")) as f:
    (folder / "config.json").write_text(f.read())  # committed; its weights are not
  for call in (lambda: finetune.get_config(str(folder)), lambda: checkpoints.load_trained(str(folder))):
    with pytest.raises(FileNotFoundError, match="python -m experiments.import_torch --all_akamaster"):
      call()
