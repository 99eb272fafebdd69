"""The reproduction's train stage keeps a finished run committed as its exported network alone
(results/repro/train/<run>: variables.msgpack, config, metrics; no orbax checkpoint): it evaluates it and does
not train it again. An unfinished run, or one of another model, goes to training as before. Random images:
no data needed."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import reproduce as reproduce_config
from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data_lib
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
  config.train.train_size = 256
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
  x, labels = data(cfg)["test"]   # both errors recomputed here: branches at full strength, and scaled by K/n
  error = lambda m: float(np.mean(np.argmax(model.apply(variables, data_lib.normalize_for(model, x), block_mask=m),
                                            -1) != labels))
  assert t["num_blocks"] == 9 and t["num_active"] == 4  # round(9 x 23/54) of 9 blocks trained per batch
  assert t["unscaled_error"] == pytest.approx(error(jnp.ones(9)))
  assert t["scaled_error"] == pytest.approx(error(jnp.full(9, 4 / 9)))
  assert want == pytest.approx(t["scaled_error"])  # the run evaluates with scaled branches (modifier `scaled`)
  assert t["scaled_error"] != t["unscaled_error"]  # the treatments differ on this network
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


def _tiny_cifar_folder(root) -> str:
  """A CIFAR-10 layout with one 32x32 PNG per class and split."""
  from PIL import Image
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for name in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"):
      os.makedirs(os.path.join(root, split, name))
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(os.path.join(root, split, name, "0.png"))
  return str(root)


def test_the_train_stage_is_kept_wherever_the_same_data_lies(tmp_path):
  """The train stage's record names the data by its content, so a finished study keeps every stage on a fresh
  clone whose data sits at another path (a copy, a symlink, a moved pack); other images redo the stage."""
  import shutil
  from resnet_ensembles.data import pack
  from resnet_ensembles.study import reproduction
  first = _tiny_cifar_folder(tmp_path / "data")
  config = reproduce_config.get_config("tiny")
  config.train.folder = first
  workdir = str(tmp_path / "study")
  for path in reproduction.stage_outputs(config, workdir, "train"):  # a finished train stage for this data
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()
  stages.write_json({"stage": "train", "hash": reproduction.config_hash(config, "train")},
                    os.path.join(workdir, "train.done.json"))
  kept = lambda folder: reproduction.is_done(_with_folder(config, folder), workdir, "train")
  assert kept(first)
  second = str(tmp_path / "elsewhere" / "cifar10")
  shutil.copytree(first, second)
  assert kept(second)                                     # the same images at a second path
  os.symlink(second, tmp_path / "link")
  assert kept(str(tmp_path / "link"))
  assert not kept(str(tmp_path / "nowhere"))              # no data there: the stage reruns (and names the path)
  with open(os.path.join(second, "test", "cat", "0.png"), "ab") as f:
    f.write(b"\0")                                        # one image changed: other data
  assert not kept(second)
  packs = [str(tmp_path / "a.cifarpack"), str(tmp_path / "moved" / "b.cifarpack")]
  pack.pack_folder(first, packs[0])
  os.makedirs(os.path.dirname(packs[1]))
  shutil.copy(packs[0], packs[1])
  for_pack = lambda p: reproduction.config_hash(_with_folder(config, p), "train")
  assert for_pack(packs[0]) == for_pack(packs[1]) != reproduction.config_hash(config, "train")


def _with_folder(config, folder: str):
  c = config.copy_and_resolve_references()
  c.train.folder = folder
  return c
