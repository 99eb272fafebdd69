"""resnet_ensembles.study.reproduction (experiments/reproduce.py) on the `tiny` config: stages, skipping, partial
reruns, the data at another path, a part of a study done elsewhere, the report, and the mains that read the same
trained runs. One tiny study is run once for the whole file (`study`); each test checks its properties on it."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.utils import provenance
from resnet_ensembles.study import reproduction
from resnet_ensembles.lesion import study as lesion_study
from resnet_ensembles.study import lesion_stage, stages as reproduction_stages
from experiments.configs import reproduce as reproduce_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_data(small_cifar_root):
  """The tiny study's images (the `tiny` config's draw, as a small folder), decoded once for the file."""
  from resnet_ensembles.data import cifar10 as data
  return data.load_cifar10("folder", small_cifar_root)


@pytest.fixture(scope="module")
def study(tmp_path_factory, small_cifar_root, tiny_data):
  """(config, workdir, stages run) of one finished tiny study; tests take copies of the config."""
  config = reproduce_config.get_config("tiny")
  config.train.folder = small_cifar_root
  workdir = str(tmp_path_factory.mktemp("study") / "repro")
  return config, workdir, reproduction.run(config, workdir, data=tiny_data)


def test_reproduce_tiny_end_to_end(study, tiny_data):
  config, workdir, ran = study
  config = config.copy_and_resolve_references()
  assert ran == list(reproduction.STAGES)
  for stage in reproduction.STAGES:
    with open(os.path.join(workdir, f"{stage}.done.json")) as f:
      done = json.load(f)
    assert done["stage"] == stage and done["wall_s_this_start"] >= 0 and done["finished"].endswith("Z")
    assert all(os.path.exists(p) for p in reproduction.stage_outputs(config, workdir, stage))

  report = open(os.path.join(workdir, "report.md")).read()
  with open(os.path.join(workdir, "lesion", "resnet", "single_stored.json")) as f:
    single = json.load(f)
  assert f"{100 * single['networks'][0]['full_error']:.2f}%" in report
  with open(os.path.join(workdir, "paths", "paths.json")) as f:
    r = json.load(f)["effective_range"]["image"]
  assert f"{r['lo']}-{r['hi']} of {single['networks'][0]['num_blocks']}" in report
  assert "holds?" in report and "![" in report and "variants/variants.png" in report
  fit = paths.exponential_fit(json.load(open(os.path.join(workdir, "paths", "paths.json")))["sampled"]["image_mean"])
  assert f"x{fit['factor_per_block']:.3g} per block, r^2 {fit['r2']:.3f}" in report
  with open(os.path.join(workdir, "train", "short_fwd", reproduction.TREATMENTS)) as f:
    t = json.load(f)
  assert f"{100 * t['unscaled_error']:.2f}% / {100 * t['scaled_error']:.2f}%" in report  # both treatments
  trained = [l for l in report.splitlines() if l.startswith("| sd |")]  # which code and machine trained it
  import jax
  assert trained and f"{provenance.git_commit()[:7]} on {jax.device_count()} x cpu: steps 0-2" in trained[0], trained

  assert reproduction.run(config, workdir, data=tiny_data) == []   # everything done: nothing reruns

  os.remove(os.path.join(workdir, "paths", "paths.json"))   # one stage's output lost
  assert reproduction.run(config, workdir, data=tiny_data) == ["paths", "figures", "report"]

  config.report.version += 1                                 # a changed config section reruns its stage
  assert reproduction.run(config, workdir, data=tiny_data) == ["report"]
  config.report.version -= 1                                 # and so does going back (the other tests' study)
  assert reproduction.run(config, workdir, data=tiny_data) == ["report"]


def test_the_same_data_at_another_path_keeps_every_stage(study, tiny_data, tmp_path):
  """A fresh clone whose CIFAR-10 copy lies elsewhere (here: a symlink to it) keeps every stage: the train
  stage's record names the data by its content, not its path."""
  config, workdir, _ = study
  config = config.copy_and_resolve_references()
  os.symlink(config.train.folder, tmp_path / "cifar10")
  config.train.folder = str(tmp_path / "cifar10")
  assert reproduction.run(config, workdir, data=tiny_data) == []


def test_lesion_and_paths_stages_keep_what_still_holds(study, tiny_data):
  config, workdir, _ = study
  config = config.copy_and_resolve_references()
  multi = os.path.join(workdir, "lesion", "sd", "multi_stored.json")
  stamp, stage = os.path.getmtime(multi), lesion_stage.stage_lesion("multi")
  config.lesion.batch_size = 50          # chunking only: a rerun of the stage keeps the sweeps already written,
  stage(config, workdir, reproduction_stages.DataCache(tiny_data))
  assert os.path.getmtime(multi) == stamp  # which hold the same networks (variables_sha256) and settings
  config.lesion.seed = 1                 # a setting the numbers depend on: swept again (one run of the stage)
  lesion_stage.lesion_run(config, workdir, reproduction_stages.DataCache(tiny_data), "multi", "sd")
  assert os.path.getmtime(multi) != stamp and reproduction_stages.read_json(multi)["flags"]["seed"] == 1
  config.lesion.batch_size, config.lesion.seed = 100, 0
  paths_json = os.path.join(workdir, "paths", "paths.json")
  stamp = os.path.getmtime(paths_json)   # the paths stage keeps a paths.json of the same network and config
  reproduction_stages.stage_paths(config, workdir, reproduction_stages.DataCache(tiny_data))
  assert os.path.getmtime(paths_json) == stamp


def test_a_part_done_elsewhere_is_what_the_stages_write(study, tiny_data, tmp_path):
  """Part of a study done elsewhere (--only_runs): the run and its sweeps as the stages write them, no stage
  done. The run is the study's own trained network (copied: its training is the train stage's, tested above),
  so the part's sweeps must hold the study's numbers."""
  config, workdir, _ = study
  config = config.copy_and_resolve_references()
  part = str(tmp_path / "part")
  shutil.copytree(os.path.join(workdir, "train", "short_fwd"), os.path.join(part, "train", "short_fwd"),
                  ignore=shutil.ignore_patterns(".lock"))
  reproduction.run_part(config, part, ["short_fwd"], data=tiny_data)
  run_dir = os.path.join(part, "train", "short_fwd")
  sweep = os.path.join(part, "lesion", "short_fwd", "multi_stored.json")
  strip = lambda d: [{k: v for k, v in n.items() if k != "workdir"} for n in d["networks"]]
  assert strip(json.load(open(sweep))) == strip(json.load(open(os.path.join(workdir, "lesion", "short_fwd",
                                                                             "multi_stored.json"))))
  assert lesion_stage.kept_sweep(sweep, config.lesion, [run_dir], 100)
  lc = config.lesion.copy_and_resolve_references()
  lc.recal_batches = 3                   # no recalibration in a stored-BN sweep: its settings do not matter
  assert lesion_stage.kept_sweep(sweep, lc, [run_dir], 100)
  recal = json.load(open(sweep))         # the same JSON as a recalibrated sweep: now they do
  recal["bn"] = recal["flags"]["bn"] = lc.bn = "recalibrate"
  json.dump(recal, open(tmp_path / "recal.json", "w"))
  assert not lesion_stage.kept_sweep(str(tmp_path / "recal.json"), lc, [run_dir], 100)
  lc.recal_batches = config.lesion.recal_batches
  # a sweep that does not record re-estimating from the first changed position on (every statistic
  # re-estimated, under the same name) is swept again
  assert not lesion_stage.kept_sweep(str(tmp_path / "recal.json"), lc, [run_dir], 100)
  for net in recal["networks"]:
    net["recalibration"] = lesion_study.recalibration("recalibrate")
  json.dump(recal, open(tmp_path / "recal.json", "w"))
  assert lesion_stage.kept_sweep(str(tmp_path / "recal.json"), lc, [run_dir], 100)
  for name in lesion_stage.RECAL_FLAGS:  # written before the flags were recorded: lesion_study's defaults
    del recal["flags"][name]
  json.dump(recal, open(tmp_path / "recal.json", "w"))
  assert not lesion_stage.kept_sweep(str(tmp_path / "recal.json"), lc, [run_dir], 100)  # tiny: 2 x 32
  lc.recal_batches, lc.recal_batch_size = 4, 128
  assert lesion_stage.kept_sweep(str(tmp_path / "recal.json"), lc, [run_dir], 100)
  assert not [f for f in os.listdir(part) if f.endswith(".done.json")]
  saved = json.load(open(os.path.join(run_dir, "config.json")))
  saved["train_mask"]["scale_at_test"] = not saved["train_mask"]["scale_at_test"]
  json.dump(saved, open(os.path.join(run_dir, "config.json"), "w"))
  assert not lesion_stage.kept_sweep(sweep, config.lesion, [run_dir], 100)  # other test-time treatment
  with pytest.raises(ValueError, match="unknown run"):
    reproduction.run_part(config, part, ["shortest"])


def test_the_mains_read_the_studys_runs(study):
  """The standalone mains read the same trained runs (subprocesses: absl flags, figures, one-line errors)."""
  _, workdir, _ = study
  run_main = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                                          timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  resnet, plain, out = (os.path.join(workdir, "train", r) for r in ("resnet", "plain", "mains"))
  done = run_main("experiments.lesion", f"--workdir={resnet}", f"--plain_workdir={plain}", "--sweep=multi",
                  "--num_samples=1", "--max_k=2", "--test_size=100", f"--output_dir={out}", "--label=normal")
  assert done.returncode == 0, done.stderr[-2000:]
  with open(os.path.join(out, "multi_stored.json")) as f:
    multi = json.load(f)
  assert [len(n["rows"]) for n in multi["networks"]] == [2, 2] and multi["test_images"] == 100
  assert [n["label"] for n in multi["networks"]] == ["normal", "plain"]
  assert os.path.getsize(os.path.join(out, "multi_stored.png")) > 10_000
  done = run_main("experiments.paths", f"--workdir={resnet}", "--config=experiments/configs/paths.py:quick",
                  "--config.samples_per_length=2", "--config.num_batches=1", f"--output_dir={out}")
  assert done.returncode == 0 and "effective paths" in done.stdout, done.stderr[-2000:]
  done = run_main("experiments.lesion", f"--workdir={resnet}", "--sweep=reorder", "--max_k=0")
  assert done.returncode != 0 and done.stderr.strip().splitlines()[-1].startswith("error: "), done.stderr[-2000:]
  done = run_main("experiments.reproduce", f"--workdir={out}", "--config=experiments/configs/reproduce.py:tinier")
  last = done.stderr.strip().splitlines()[-1]  # a config whose get_config raises: one line, not its traceback
  assert done.returncode != 0 and last.startswith("error: "), last
  assert f"{', '.join(reproduce_config.PRESETS)}; got 'tinier'" in last, last
  assert "Traceback" not in done.stderr


def test_the_committed_study_is_current_for_the_cpu_config(cifar_root):
  """`./run.sh main` starts from results/repro: every stage there must be done for today's `cpu` config with the
  CIFAR-10 copy found here, wherever it lies, or a config change has quietly made the quickstart redo stages
  (rerun it with WORKDIR=results/repro)."""
  config = reproduce_config.get_config("cpu")
  config.train.folder = cifar_root
  committed = os.path.join(ROOT, "results", "repro")
  stale = [s for s in reproduction.STAGES if not reproduction.is_done(config, committed, s)]
  assert not stale, f"results/repro is stale for the cpu config in stages {stale}"
