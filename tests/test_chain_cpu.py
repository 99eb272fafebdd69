"""The ResNet-110 preset for any processor (`reproduce.py:resnet110_cpu`): what it trains, which steps its chain
runs, where its sweeps go, and what each piece records about the processor it ran on."""
import os

import jax
import numpy as np
import pytest

from experiments.configs import cifar10, depth_series as depth_config, reproduce
from resnet_ensembles import models
from resnet_ensembles.store import checkpoints
from resnet_ensembles.study import depth_series, stages, verdicts as v
from resnet_ensembles.study.chain import files as chain_files, runner as chain, steps as chain_steps


def model_chunk(train) -> int:
  return train.model.get("conv_chunk", 0)


def test_preset_trains_the_papers_resnet110_with_the_cpu_recipe():
  c = reproduce.get_config("resnet110_cpu")
  train = stages.train_config(c, "resnet")
  want = cifar10.get_config("resnet110,cpu")
  assert (train.model.depth, train.model.variant, train.model.name) == (110, "preact", "resnet")
  assert train.num_epochs == 40 == want.num_epochs
  for field in ("learning_rate", "momentum", "weight_decay", "batch_size", "lr_boundaries", "warmup_steps",
                "warmup_lr"):
    assert train[field] == want[field], field
  assert train.data.folder == reproduce.PACK and not os.path.isabs(train.data.folder)  # same config on any machine
  assert c.chain.state_dir == "results/resnet110_cpu"
  # convolutions in chunks of 16 for this preset only: the other presets' stage hashes stay as committed
  assert model_chunk(train) == 16 and model_chunk(stages.train_config(reproduce.get_config("cpu"), "resnet")) == 0
  assert models.from_config(train).conv_chunk == 16
  # the study: the depth series' own settings, both BatchNorm treatments
  series = depth_config.get_config("cpu")
  for sweep in ("single", "multi", "reorder"):
    assert {**c.series[sweep].to_dict(), "ks": ()} == {**series[sweep].to_dict(), "ks": ()}
  # ... but k deletions at fewer counts of its 51 deletable blocks, the paper's fractions among them
  model = models.from_config(train)
  deletable = model.layout.num_blocks - len(model.layout.stage_openers)
  assert deletable == 51 and set(v.k_at_fractions(deletable, list(c.series.multi.ks)).values()) == {5, 10, 20}
  assert list(c.series.multi.ks) == sorted(c.series.multi.ks) and c.series.multi.ks[-1] == deletable
  assert tuple(c.series.bns) == ("stored", "recalibrate") and c.series.paths.to_dict() == series.paths.to_dict()


def test_steps_of_each_preset():
  assert chain.steps_of(reproduce.get_config("resnet110_cpu")) == ["train-resnet", "sweeps-resnet"]
  paper = chain.steps_of(reproduce.get_config("paper_jpeg"))
  assert paper[:3] == ["speed", "train-resnet", "sweeps-resnet"] and paper[-2:] == ["figures", "report"]
  c = reproduce.get_config("resnet110_cpu")
  for runs in (("plain",), ("resnet", "sd", "plain"), ("resnet", "resnet"), ("resnet", "wide")):
    c.chain.runs = runs
    with pytest.raises(ValueError, match="chain.runs"):
      chain.steps_of(c)


def test_machine_line_names_the_vector_extensions():
  line = chain.cpu()
  assert line["cpu_cores"] == os.cpu_count() and line["cpu"]
  assert set(line["vector_extensions"]) <= set(chain.VECTOR_EXTENSIONS)
  flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
  if " avx2" in flags:
    assert "avx2" in line["vector_extensions"]
  assert ("avx512f" in line["vector_extensions"]) == (" avx512f" in flags)


def test_sweeps_step_hands_the_run_to_the_depth_series_and_retires_it(tmp_path, monkeypatch):
  c = reproduce.get_config("resnet110_cpu")
  net_config = cifar10.get_config("resnet20")
  model = models.from_config(net_config)
  workdir = str(tmp_path / "state")
  run_dir = os.path.join(workdir, "train", "resnet")
  checkpoints.export_variables(models.init_variables(model, jax.random.PRNGKey(0)), net_config, run_dir)
  seen = {}

  def fake_run(series, out, data):
    seen.update(series=series, out=out, data=data)
    return ["own_resnet110/single_stored"]

  monkeypatch.setattr(depth_series, "run", fake_run)
  data = {split: (np.zeros((4, 32, 32, 3), np.uint8), np.arange(4)) for split in ("train", "test")}
  out = chain_steps.step_sweeps(c, workdir, stages.DataCache(full=data), "resnet")
  assert seen["out"] == os.path.join(workdir, "depth_series")
  assert dict(seen["series"].networks) == {"own_resnet110": run_dir} and list(seen["series"].order) == ["own_resnet110"]
  assert seen["series"].multi.test_images == 2000 and seen["series"].single.test_images == 0
  assert seen["data"]["test"][0].shape == (4, 32, 32, 3)
  assert out["series"] == ["own_resnet110/single_stored"]
  retired = os.path.join(workdir, chain_files.RETIRED, "resnet", checkpoints.EXPORT_FILE)
  assert os.path.exists(retired) and out["retired"]["bytes"] == os.path.getsize(retired)


def test_absorb_keeps_what_was_edited_here_and_status_lists_each_piece(tmp_path):
  c = reproduce.get_config("resnet110_cpu")
  state, work, out = (str(tmp_path / d) for d in ("state", "work", "out"))
  os.makedirs(os.path.join(state, "predictions"))
  for path, text in (("README.md", "old readme"), ("predictions/predictions.json", "{}")):
    open(os.path.join(state, path), "w").write(text)
  chain_files.seed(state, work)
  open(os.path.join(state, "README.md"), "w").write("edited while the piece ran")
  open(os.path.join(state, "predictions", "predictions.md"), "w").write("new table")
  os.makedirs(os.path.join(work, "train", "resnet"))
  with open(os.path.join(work, "train", "resnet", "metrics.jsonl"), "w") as f:
    f.write('{"step": 400, "train/loss": 2.0}\n')
  line = {"piece": 1, "started": "2026-01-01T00:00:00Z", "wall_s": 3600.0, "stopped": "sigterm",
          "train_steps": {"resnet": [0, 400]}, "train_images_per_s": 14.2, "git_commit": "0123456789abcdef",
          "machine": {"devices": "1 x cpu", "cpu": "Some CPU", "cpu_cores": 2, "vector_extensions": ["avx2", "fma"]}}
  marker = os.path.join("train", "resnet", "checkpoints", "400", chain_files.COMMIT_MARKER)
  os.makedirs(os.path.dirname(os.path.join(work, marker)))
  with open(os.path.join(work, marker), "w") as f:
    f.write(f"Checkpoint commit was successful to {work}/train/resnet/checkpoints/400")
  chain_files.collect(work, out, line, ["resnet"])
  chain_files.absorb(out, state)
  assert open(os.path.join(state, marker)).read() == "Checkpoint commit was successful.\n"  # no machine's path
  assert open(os.path.join(state, "README.md")).read() == "edited while the piece ran"
  assert sorted(os.listdir(os.path.join(state, "predictions"))) == ["predictions.json", "predictions.md"]
  assert chain_files.piece_number(state) == 1
  text = chain.status_markdown(c, state)
  assert "next: train-resnet" in text and "resnet 400 (of 40 epochs: 15,600 steps)" in text
  assert "| 1 | 2026-01-01T00:00:00Z | 3,600 | sigterm | resnet 0 -> 400 | 14.2 | Some CPU (1 x cpu, 2 cores) | avx2, fma |" in text
  # 15,200 steps x 128 images at 14.2 images/s: 137,014 s
  assert "Training left: 15,200 steps (1,945,600 images), 1d 14:03:34 at the last piece's 14.2 images/s." in text
