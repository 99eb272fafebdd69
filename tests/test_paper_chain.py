"""A rehearsal of experiments/paper_chain.py on this CPU: the chain's command on a tiny study, stopped mid-way
several times (each piece's output absorbed into the state, as after a piece on another machine), ends with the
networks and metrics of one uninterrupted training and every sweep run on those networks; every piece hands back at
most 8 files under 16 MiB each, holding the latest checkpoint only."""
import glob
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

from resnet_ensembles.study.chain import files as chain_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2 epochs of 8 steps (256 images); the smallest sweeps that still run every code path (what a
# sweep computes is the sweep engines' tests' business; here: that each one runs, survives and lands in the state).
# The precision measurement that opens the chain is left out (test_chain_speed.py runs it on a smaller network).
OVERRIDES = {"train.num_epochs": 2, "train.train_size": 256, "chain.speed": False, "lesion.num_samples": 1, "lesion.recal_batches": 1}
ARGS = ["--config=experiments/configs/reproduce.py:tiny", '--config.chain.runs=("resnet","plain")',
        *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]


def _piece(tmp, state, out, *, budget=3600.0, term_at_checkpoint=None):
  """One piece; `term_at_checkpoint`: SIGTERM the command once a run's checkpoint of that step appears that
  was not in the state (a stop mid-way through training, at a known point). The default budget is far above
  what a piece needs (minutes), so that only the pieces meant to stop stop, however busy the machine."""
  # pieces recompile nothing: one compilation cache for them all, the test run's own when it has one (the tiny
  # study's programs are test_reproduce.py's too)
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR", str(tmp / "jax_cache")),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  work = str(tmp / "work")  # the same path for every piece and the reference: sweep JSONs name it
  cmd = [sys.executable, "-m", "experiments.paper_chain", *ARGS, f"--state_dir={state}", f"--work_dir={work}",
         f"--out_dir={out}", f"--budget_s={budget}", f"--networks_dir={tmp / 'unused'}"]
  runs_at = lambda base: {p.split(os.sep)[-3] for p in glob.glob(os.path.join(
      base, "train", "*", "checkpoints", str(term_at_checkpoint)))}
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
  subprocess.run([sys.executable, "-m", "experiments.paper_chain", *ARGS, f"--absorb={out}", f"--state_dir={state}",
                  f"--networks_dir={networks}"], cwd=ROOT, check=True)


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


def _reference(tmp, runs=("resnet", "plain")) -> dict[str, dict]:
  """The uninterrupted training the pieces must reproduce: the chain's own train step, in this process, on the
  same config (one run after the other, as one piece would train them). Returns run -> its network's
  fingerprint and exported bytes."""
  from experiments.configs import reproduce as reproduce_config
  from resnet_ensembles.store import checkpoints
  from resnet_ensembles.study import stages
  from resnet_ensembles.study.chain import runner, steps
  config = reproduce_config.get_config("tiny")
  config.chain.runs = ("resnet", "plain")
  for key, value in OVERRIDES.items():
    section, name = key.split(".")
    config[section][name] = value
  ref, data, out = str(tmp / "ref"), stages.DataCache(), {}
  cfg = runner.with_precision(config, ref)
  stages.apply_precision(cfg)
  for run in runs:
    steps.step_train(cfg, ref, data, run)
    _, variables, saved = checkpoints.load_trained(os.path.join(ref, "train", run))
    export = str(tmp / "ref_export" / run)
    checkpoints.export_variables(variables, saved, export)
    out[run] = {"sha": checkpoints.fingerprint(variables), "evals": _evals(ref, run),
                "bytes": open(os.path.join(export, checkpoints.EXPORT_FILE), "rb").read()}
  return out


def test_chain_rehearsal_matches_one_uninterrupted_run(tmp_path, small_cifar_root, monkeypatch):
  """Pieces stopped by SIGTERM mid-training (twice, in two runs) and by the budget, each absorbed into the
  state as after a piece on another machine, end with the networks of one uninterrupted training, bit for bit,
  and every sweep of the chain run on exactly those networks (each sweep records its network's fingerprint;
  the sweep engines' own tests show a sweep is a function of its network, data and settings)."""
  monkeypatch.setenv("CIFAR10_DIR", small_cifar_root)  # the tiny study's images: every piece reads them
  t0 = time.time()
  ref = _reference(tmp_path)
  t_ref = time.time() - t0

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
  print(f"reference {t_ref:.0f} s; pieces: " + "; ".join(f"{l['stopped']} {l['wall_s']:.0f} s -> {l['stage']}"
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
  # reference's final test error (the same 100 images)
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
