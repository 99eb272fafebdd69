"""The training main and the export main as subprocesses (absl flags, exit status, files), and the training-curve
figure drawn from a run's metrics."""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_train_main_trains_then_export_run_writes_a_loadable_folder(cifar_root, tmp_path):
  from resnet_ensembles.store import checkpoints
  from resnet_ensembles.training import metrics
  workdir, out = tmp_path / "run", tmp_path / "export"
  train = ["experiments.train", "--config=experiments/configs/cifar10.py:resnet8", f"--workdir={workdir}",
           f"--config.data.folder={cifar_root}", "--config.data.source=folder", "--config.data.train_size=64",
           "--config.data.test_size=50", "--config.batch_size=32", "--config.num_epochs=2",
           "--config.log_every_steps=1", "--config.progress=False"]
  done = _main(*train)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "final test error" in done.stdout and "after 4 steps" in done.stdout, done.stdout
  rows = metrics.read_metrics(str(workdir))
  assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4]
  assert [r["eval/epoch"] for r in rows if "eval/test_error" in r] == [1, 2]
  assert os.listdir(workdir / "tensorboard") and (workdir / "data.json").exists()

  bad = _main(*train[:3], "--config.num_epoch=3")  # a typo in a config field: one line, no traceback
  last = bad.stderr.strip().splitlines()[-1]
  assert bad.returncode != 0 and last.startswith("error: ") and "num_epoch" in last, bad.stderr[-2000:]
  assert "Traceback" not in bad.stderr
  bad = _main("experiments.train", "--config=experiments/configs/cifar10.py:resnet7", f"--workdir={workdir}")
  last = bad.stderr.strip().splitlines()[-1]
  assert bad.returncode != 0 and last.startswith("error: ") and "6n+2" in last and "got 7" in last, last

  done = _main("experiments.export_run", f"--workdir={workdir}", f"--out_dir={out}", "--machine=test box")
  assert done.returncode == 0 and "exported" in done.stdout, done.stderr[-2000:]
  assert sorted(os.listdir(out)) == ["config.json", "curves.png", "metrics.jsonl", "variables.msgpack"]
  model, v, config = checkpoints.load_trained(str(out))
  _, trained, _ = checkpoints.load_trained(str(workdir))
  assert checkpoints.fingerprint(v) == checkpoints.fingerprint(trained) and model.layout.num_blocks == 3
  export = json.load(open(out / "config.json"))["export"]
  last_eval = [r for r in rows if "eval/test_error" in r][-1]
  assert export["step"] == 4 and export["epochs"] == 2 and export["test_error"] == last_eval["eval/test_error"]
  assert export["machine"] == "test box" and export["data"] == json.load(open(workdir / "data.json"))["description"]
  assert open(out / "metrics.jsonl").read() == open(workdir / "metrics.jsonl").read()
  assert os.path.getsize(out / "curves.png") > 10_000
  done = _main("experiments.export_run", f"--workdir={tmp_path / 'nothing'}", f"--out_dir={out}")
  assert done.returncode != 0 and done.stderr.strip().splitlines()[-1].startswith("error: ")


def test_training_curves_plot_the_metrics(tmp_path, monkeypatch):
  import matplotlib.pyplot as plt
  from resnet_ensembles.plots import training as training_plots
  rows = [{"step": 10, "train/loss": 2.0}, {"step": 20, "train/loss": 1.5},
          {"step": 20, "eval/epoch": 1.0, "eval/test_error": 0.6, "eval/test_loss": 1.4},
          {"step": 30, "train/loss": 1.2}, {"step": 40, "train/loss": 1.0},
          {"step": 40, "eval/epoch": 2.0, "eval/test_error": 0.45, "eval/test_loss": 1.1}]
  figures, close = [], plt.close
  monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
  path = training_plots.plot_training_curves(rows, 20, "resnet-8", str(tmp_path / "curves.png"))
  assert path == str(tmp_path / "curves.png") and os.path.getsize(path) > 10_000
  (fig,) = figures
  loss_ax, error_ax = fig.axes
  np.testing.assert_allclose(loss_ax.lines[0].get_xydata(), [[0.5, 2.0], [1.0, 1.5], [1.5, 1.2], [2.0, 1.0]])
  np.testing.assert_allclose(error_ax.lines[0].get_xydata(), [[1.0, 60.0], [2.0, 45.0]])
  assert "45.00%" in error_ax.get_title() and fig._suptitle.get_text() == "resnet-8"
  assert loss_ax.get_yscale() == "log"
  close(fig)


def test_run_titles_name_any_model_family():
  """export_run's curves title: a ViT has no ResNet variant (it read config.model.variant and failed)."""
  from experiments.configs import cifar10, vit
  from resnet_ensembles.plots.training import run_title
  assert run_title(cifar10.get_config("resnet20"), "CIFAR-10") == "resnet-20 (preact), CIFAR-10"
  assert run_title(cifar10.get_config("resnet20,sd"), "d") == "resnet-20 (preact, stochastic depth), d"
  assert run_title(vit.get_config("s6n"), "d") == "vit-6 (width 128, 4 heads), d"
