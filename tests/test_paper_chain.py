"""A rehearsal of experiments/paper_chain.py on this CPU: the chain's command on a tiny study, stopped mid-way
several times (each piece's output absorbed into the state, as after a piece on another machine), ends with the
networks, metrics and sweeps of one uninterrupted piece; every piece hands back at most 8 files under 16 MiB each,
holding the latest checkpoint only."""
import glob
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

from resnet_ensembles.models import layout
from resnet_ensembles.study.chain import files as chain_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=experiments/configs/reproduce.py:tiny", '--config.chain.runs=("resnet","plain")',
        "--config.train.num_epochs=2", "--config.chain.check_steps=2"]  # 2 epochs of 8 steps (256 images)


def _piece(tmp, state, out, *, budget=3600.0, term_at_checkpoint=None, speed=True):
  """One piece; `term_at_checkpoint`: SIGTERM the command once a run's checkpoint of that step appears that
  was not in the state (a stop mid-way through training, at a known point). The default budget is far above
  what a piece needs (minutes), so that only the pieces meant to stop stop, however busy the machine. `speed=False`: a chain without the
  speed step (its precision choice on a CPU is JAX's default either way, so the networks are the same)."""
  # pieces recompile nothing: one compilation cache for them all, the test run's own when it has one (the tiny
  # study's programs are test_reproduce.py's too)
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR", str(tmp / "jax_cache")),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  work = str(tmp / "work")  # the same path for every piece and the reference: sweep JSONs name it
  args = ARGS + ([] if speed else ["--config.chain.speed=False"])
  cmd = [sys.executable, "-m", "experiments.paper_chain", *args, f"--state_dir={state}", f"--work_dir={work}",
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


def test_chain_rehearsal_matches_one_uninterrupted_run(tmp_path, small_cifar_root, monkeypatch):
  monkeypatch.setenv("CIFAR10_DIR", small_cifar_root)  # the tiny study's images: every piece reads them
  t0 = time.time()
  ref, ref_nets = str(tmp_path / "ref"), str(tmp_path / "ref_networks")
  line = _piece(tmp_path, ref, str(tmp_path / "ref_out"))
  assert line["stopped"] == "finished" and line["stage"] == "all done", line
  _check_out(str(tmp_path / "ref_out"))
  _absorb(str(tmp_path / "ref_out"), ref, ref_nets)
  t_ref = time.time() - t0

  state, nets, lines = str(tmp_path / "state"), str(tmp_path / "networks"), []
  # The interrupted chain leaves out the speed step (the reference measures it; its choice here, JAX's default
  # precision, is what a chain without it uses), so its pieces spend their time on what they are to survive.
  plan = [dict(term_at_checkpoint=8),    # the ResNet stopped after its first epoch (of 2)
          dict(budget=1.0),              # stopped by the budget before the work started: nothing lost
          dict(term_at_checkpoint=8),    # the ResNet finished, swept, retired; the plain net stopped mid-way
          dict(), dict()]
  for i, kw in enumerate(plan):
    out = str(tmp_path / f"out{i}")
    lines.append(_piece(tmp_path, state, out, speed=False, **kw))
    live = _check_out(out)
    _absorb(out, state, nets)
    assert len(glob.glob(os.path.join(state, "train", "*", "checkpoints", "*"))) == sum(map(len, live.values()))
    if lines[-1]["stage"] == "all done":
      break
  print(f"reference {t_ref:.0f} s; pieces: " + "; ".join(f"{l['stopped']} {l['wall_s']:.0f} s -> {l['stage']}"
                                                         for l in lines))
  assert lines[-1]["stage"] == "all done"
  assert lines[0]["stopped"] == "sigterm" and lines[0]["stage"] == "train-resnet"
  assert lines[1]["stopped"] == "budget" and not lines[1]["steps_done_now"]
  assert lines[2]["stopped"] == "sigterm" and lines[2]["stage"] == "train-plain"
  log = [json.loads(l) for l in open(os.path.join(state, chain_files.LOG_FILE))]
  assert [l["piece"] for l in log] == list(range(1, len(lines) + 1))
  assert [(l["stopped"], l["stage"]) for l in log] == [(l["stopped"], l["stage"]) for l in lines]  # every piece logged
  assert all(l["machine"]["platform"] == "cpu" and l["git_commit"] and l["wall_s"] > 0 for l in log)

  # the networks: bit-equal parameters and BatchNorm statistics; both stopped and resumed mid-training
  for run in ("resnet", "plain"):
    a = open(os.path.join(ref_nets, run, "variables.msgpack"), "rb").read()
    b = open(os.path.join(nets, run, "variables.msgpack"), "rb").read()
    assert a == b, run
    starts = [json.loads(l)["step"] for l in open(os.path.join(state, "train", run, "starts.jsonl"))]
    assert 0 < starts[1] < 16, starts   # resumed from a checkpoint mid-way (2 epochs x 8 steps)
    assert _evals(state, run) == _evals(ref, run)
    assert not os.path.exists(os.path.join(state, "train", run, "checkpoints"))  # retired: not in the state
  got, want = _sweeps(state), _sweeps(ref)
  assert sorted(got) == sorted(want) and len(got) == 7  # single/multi/reorder x stored/recalibrate; paths
  for name in want:
    assert got[name] == want[name], name
  single = got[os.path.join("lesion", "resnet", "single_recalibrate.json")]
  assert [n["label"] for n in single["networks"]] == ["ResNet", "plain"]
  assert not glob.glob(os.path.join(state, "lesion", "resnet", "single_*.*.json"))  # the halves are gone
  assert not os.path.exists(os.path.join(state, "chain", "speed.json"))
  speed = chain_files.read_json(os.path.join(ref, "chain", "speed.json"))  # the measurement, in the absorbed state
  assert set(speed["results"]) == {"fp32", "tf32", "bf16"} and speed["choice"]["name"] == "default"
  assert speed["train_flops_per_image"] == 6 * layout.forward_macs(20) and "passed" in speed["bf16_check"]
