"""resnet_ensembles.study.reproduction (experiments/reproduce.py) on the `tiny` config: stages, skipping, partial
reruns, the data at another path, a part of a study done elsewhere, the report, the mains that read the same
trained runs, and the paper chain (experiments/paper_chain.py) rehearsed in pieces against the same study. One tiny
study is run once for the whole file (`study`); each test checks its properties on it."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.utils import provenance
from resnet_ensembles.study import reproduction
from resnet_ensembles.lesion import study as lesion_study
from resnet_ensembles.study import lesion_stage, stages as reproduction_stages
from resnet_ensembles.store import checkpoints
from resnet_ensembles.study.chain import files as chain_files
from experiments.configs import reproduce as reproduce_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny study trained for 2 epochs of 8 steps (64 images, batch 8) instead of the preset's 2 steps: the
# chain's rehearsal below stops pieces mid-way through training, after an epoch's checkpoint, and compares them
# with this study's uninterrupted networks. Evaluated and swept on 50 of the preset's 100 test images: every
# property below holds on any number of them, and the sweeps compute on half as many.
TRAIN = {"num_epochs": 2, "train_size": 64, "batch_size": 8, "test_size": 50}
TEST_IMAGES = TRAIN["test_size"]


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
  config.train.update(TRAIN)
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
  assert trained and f"{provenance.git_commit()[:7]} on {jax.device_count()} x cpu: steps 0-16" in trained[0], trained

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
  config.lesion.batch_size = 25          # chunking only: a rerun of the stage keeps the sweeps already written,
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
  assert lesion_stage.kept_sweep(sweep, config.lesion, [run_dir], TEST_IMAGES)
  lc = config.lesion.copy_and_resolve_references()
  lc.recal_batches = 3                   # no recalibration in a stored-BN sweep: its settings do not matter
  assert lesion_stage.kept_sweep(sweep, lc, [run_dir], TEST_IMAGES)
  recal = json.load(open(sweep))         # the same JSON as a recalibrated sweep: now they do
  recal["bn"] = recal["flags"]["bn"] = lc.bn = "recalibrate"
  json.dump(recal, open(tmp_path / "recal.json", "w"))
  assert not lesion_stage.kept_sweep(str(tmp_path / "recal.json"), lc, [run_dir], TEST_IMAGES)
  lc.recal_batches = config.lesion.recal_batches
  # a sweep that does not record re-estimating from the first changed position on (every statistic
  # re-estimated, under the same name) is swept again
  assert not lesion_stage.kept_sweep(str(tmp_path / "recal.json"), lc, [run_dir], TEST_IMAGES)
  for net in recal["networks"]:
    net["recalibration"] = lesion_study.recalibration("recalibrate")
  json.dump(recal, open(tmp_path / "recal.json", "w"))
  assert lesion_stage.kept_sweep(str(tmp_path / "recal.json"), lc, [run_dir], TEST_IMAGES)
  for name in lesion_stage.RECAL_FLAGS:  # written before the flags were recorded: lesion_study's defaults
    del recal["flags"][name]
  json.dump(recal, open(tmp_path / "recal.json", "w"))
  assert not lesion_stage.kept_sweep(str(tmp_path / "recal.json"), lc, [run_dir], TEST_IMAGES)  # tiny: 2 x 32
  lc.recal_batches, lc.recal_batch_size = 4, 128
  assert lesion_stage.kept_sweep(str(tmp_path / "recal.json"), lc, [run_dir], TEST_IMAGES)
  assert not [f for f in os.listdir(part) if f.endswith(".done.json")]
  saved = json.load(open(os.path.join(run_dir, "config.json")))
  saved["train_mask"]["scale_at_test"] = not saved["train_mask"]["scale_at_test"]
  json.dump(saved, open(os.path.join(run_dir, "config.json"), "w"))
  assert not lesion_stage.kept_sweep(sweep, config.lesion, [run_dir], TEST_IMAGES)  # other test-time treatment
  with pytest.raises(ValueError, match="unknown run"):
    reproduction.run_part(config, part, ["shortest"])


def test_the_mains_read_the_studys_runs(study):
  """The standalone mains read the same trained runs (subprocesses: absl flags, figures, one-line errors)."""
  _, workdir, _ = study
  run_main = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                                          timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  resnet, plain, out = (os.path.join(workdir, "train", r) for r in ("resnet", "plain", "mains"))
  done = run_main("experiments.lesion", f"--workdir={resnet}", f"--plain_workdir={plain}", "--sweep=multi",
                  "--num_samples=2", "--max_k=2", "--test_size=100", f"--output_dir={out}", "--label=normal")
  assert done.returncode == 0, done.stderr[-2000:]
  with open(os.path.join(out, "multi_stored.json")) as f:
    multi = json.load(f)
  assert [len(n["rows"]) for n in multi["networks"]] == [4, 4] and multi["test_images"] == 100
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


# --- the paper chain, rehearsed in pieces ------------------------------------------------------------------
# The study's settings (its training, the `tiny` sweeps: what a sweep computes is the sweep engines' tests'
# business; here: that each one runs, survives and lands in the state), the ResNet and the plain net. The
# precision measurement that opens the chain is left out (test_chain_speed.py runs it on a smaller network).
CHAIN_ARGS = ["--config=experiments/configs/reproduce.py:tiny", '--config.chain.runs=("resnet","plain")',
              "--config.chain.speed=False", *(f"--config.train.{k}={v}" for k, v in TRAIN.items())]


def _piece(tmp, state, out, *, budget=3600.0, term_at_checkpoint=None):
  """One piece; `term_at_checkpoint`: SIGTERM the command once a run starts writing a checkpoint of that step
  that was not in the state (a stop mid-way through training, at a known point: orbax writes a step into
  `<step>.orbax-checkpoint-tmp-*` and renames it when done, steps later). The default budget is far above
  what a piece needs (minutes), so that only the pieces meant to stop stop, however busy the machine."""
  # pieces recompile little: one compilation cache for them all, the test run's own when it has one (where the
  # study's training and stored-BatchNorm sweeps already compiled the same programs)
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR", str(tmp / "jax_cache")),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  work = str(tmp / "work")  # the same path for every piece: sweep JSONs name it
  cmd = [sys.executable, "-m", "experiments.paper_chain", *CHAIN_ARGS, f"--state_dir={state}", f"--work_dir={work}",
         f"--out_dir={out}", f"--budget_s={budget}", f"--networks_dir={tmp / 'unused'}"]
  runs_at = lambda base: {p.split(os.sep)[-3] for p in glob.glob(os.path.join(
      base, "train", "*", "checkpoints", f"{term_at_checkpoint}*")) if os.path.basename(p).split(".")[0] ==
      str(term_at_checkpoint)}
  had = runs_at(state)
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
  if term_at_checkpoint is not None:
    while proc.poll() is None:
      if runs_at(work) - had:
        proc.send_signal(signal.SIGTERM)
        break
      time.sleep(0.05)
  assert proc.wait(timeout=budget + 600) == 0
  return chain_files.read_json(os.path.join(out, "piece.json"))


def _check_out(out):
  names = sorted(os.listdir(out))
  assert 1 < len(names) <= chain_files.MAX_FILES, names
  assert all(os.path.getsize(os.path.join(out, n)) < 16 << 20 for n in names)
  steps = {}
  if "checkpoint.tar" in names:
    with tarfile.open(os.path.join(out, "checkpoint.tar")) as tar:
      for name in tar.getnames():
        run, _, step = name.split("/")[1:4]
        steps.setdefault(run, set()).add(step)
  assert all(len(s) == 1 for s in steps.values()), steps  # the latest checkpoint only, never a history
  with tarfile.open(os.path.join(out, "state.tar")) as tar:
    assert not [n for n in tar.getnames() if "checkpoints" in n or "tensorboard" in n]
  return steps


def _absorb(out, state, networks):
  """What `paper_chain --absorb` does with a fetched piece, in this process (the command itself, with --commit and
  the status file, is test_chain_networks.py's)."""
  chain_files.absorb(out, state, networks)


def _sweeps(state):
  out = {}
  for path in sorted(glob.glob(os.path.join(state, "lesion", "*", "*.json")) + [os.path.join(state, "paths", "paths.json")]):
    d = chain_files.read_json(path)
    d.pop("seconds", None)     # the path analysis's wall time
    d.pop("git_commit", None)  # a tree committed between pieces is the same code
    out[os.path.relpath(path, state)] = d
  return out


def _evals(state, run):
  rows = [json.loads(l) for l in open(os.path.join(state, "train", run, "metrics.jsonl"))]
  return [{k: v for k, v in r.items() if k == "step" or k.startswith("eval/")} for r in rows if "eval/test_error" in r]


def _reference(study, tmp, runs=("resnet", "plain")) -> dict[str, dict]:
  """The uninterrupted training the pieces must reproduce: the study's own runs (the chain trains each with the
  same stage, `stages.train_run`, on the same images and config). Returns run -> its network's fingerprint,
  evaluations and exported bytes."""
  _, workdir, _ = study
  out = {}
  for run in runs:
    _, variables, saved = checkpoints.load_trained(os.path.join(workdir, "train", run))
    export = str(tmp / "ref_export" / run)
    checkpoints.export_variables(variables, saved, export)
    out[run] = {"sha": checkpoints.fingerprint(variables), "evals": _evals(workdir, run),
                "bytes": open(os.path.join(export, checkpoints.EXPORT_FILE), "rb").read()}
  return out


def test_chain_rehearsal_matches_one_uninterrupted_run(study, tmp_path, small_cifar_root, monkeypatch):
  """A rehearsal of experiments/paper_chain.py: the chain's command on the tiny study, stopped mid-way several
  times. Pieces stopped by SIGTERM mid-training (twice, in two runs) and by the budget, each absorbed into the
  state as after a piece on another machine (every piece hands back at most 8 files under 16 MiB each, holding
  the latest checkpoint only), end with the networks of the study's uninterrupted training, bit for bit,
  and every sweep of the chain run on exactly those networks (each sweep records its network's fingerprint;
  the sweep engines' own tests show a sweep is a function of its network, data and settings)."""
  monkeypatch.setenv("CIFAR10_DIR", small_cifar_root)  # the tiny study's images: every piece reads them
  ref = _reference(study, tmp_path)

  state, nets, lines = str(tmp_path / "state"), str(tmp_path / "networks"), []
  plan = [dict(term_at_checkpoint=8),    # the ResNet stopped after its first epoch (of 2)
          dict(budget=1.0),              # stopped by the budget before the work started: nothing lost
          dict(term_at_checkpoint=8),    # the ResNet finished, swept, retired; the plain net stopped mid-way
          dict(), dict()]
  for i, kw in enumerate(plan):
    out = str(tmp_path / f"out{i}")
    lines.append(_piece(tmp_path, state, out, **kw))
    live = _check_out(out)
    _absorb(out, state, nets)
    assert len(glob.glob(os.path.join(state, "train", "*", "checkpoints", "*"))) == sum(map(len, live.values()))
    if lines[-1]["stage"] == "all done":
      break
  print("pieces: " + "; ".join(f"{l['stopped']} {l['wall_s']:.0f} s {l['train_steps']} -> {l['stage']}"
                                                         for l in lines))
  assert lines[-1]["stage"] == "all done"
  assert lines[0]["stopped"] == "sigterm" and lines[0]["stage"] == "train-resnet"
  assert lines[0]["steps_done_now"] == []
  assert lines[1]["stopped"] == "budget" and not lines[1]["steps_done_now"]
  assert lines[2]["stopped"] == "sigterm" and lines[2]["stage"] == "train-plain"
  log = [json.loads(l) for l in open(os.path.join(state, chain_files.LOG_FILE))]
  assert [l["piece"] for l in log] == list(range(1, len(lines) + 1))
  assert [(l["stopped"], l["stage"]) for l in log] == [(l["stopped"], l["stage"]) for l in lines]  # every piece logged
  assert all(l["machine"]["platform"] == "cpu" and l["git_commit"] and l["wall_s"] > 0 for l in log)

  # the networks: bit-equal parameters and BatchNorm statistics; both stopped and resumed mid-training
  for run in ("resnet", "plain"):
    assert open(os.path.join(nets, run, "variables.msgpack"), "rb").read() == ref[run]["bytes"], run
    starts = [json.loads(l)["step"] for l in open(os.path.join(state, "train", run, "starts.jsonl"))]
    assert 0 < starts[1] < 16, starts   # resumed from a checkpoint mid-way (2 epochs x 8 steps)
    assert _evals(state, run) == ref[run]["evals"]
    assert not os.path.exists(os.path.join(state, "train", run, "checkpoints"))  # retired: not in the state
  # the sweeps: all of them, each of exactly the reference's network; the full network's error in each is the
  # reference's final test error (the same 50 images)
  got = _sweeps(state)
  assert len(got) == 7, sorted(got)  # single/multi/reorder x stored/recalibrate; paths
  by_label = {"ResNet": "resnet", "plain": "plain"}
  for name, d in got.items():
    nets_in = d["networks"] if "networks" in d else [dict(d, label="ResNet")]
    assert nets_in and all(n["variables_sha256"] == ref[by_label[n["label"]]]["sha"] for n in nets_in), name
    for n in nets_in:
      if "full_error" in n:
        assert abs(n["full_error"] - ref[by_label[n["label"]]]["evals"][-1]["eval/test_error"]) < 1e-6, name
  single = got[os.path.join("lesion", "resnet", "single_recalibrate.json")]
  assert [n["label"] for n in single["networks"]] == ["ResNet", "plain"]
  assert not glob.glob(os.path.join(state, "lesion", "resnet", "single_*.*.json"))  # the halves are gone
