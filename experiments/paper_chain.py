r"""The paper's ResNet-110 study advanced piece by piece on GPU time that comes in pieces (docs/paper_chain.md).

  python -m experiments.paper_chain --prepare                          # here: data, wheels, commit, size check
  bash experiments/paper_chain.sh                                      # there: one piece ($OUT gets the state)
  python -m experiments.paper_chain --absorb=<fetched dir> --commit    # here: the piece's state -> results/paper110
  python -m experiments.paper_chain --restore_networks=DIR             # here: finished networks out of git history

A piece: copies the chain's state (--state_dir, results/paper110) into --work_dir, runs the next steps of
`resnet_ensembles.study.chain` in a child process, sends it SIGTERM when --budget_s has passed since this
command started (training checkpoints at the next step; any other step dies at once and is redone), SIGKILL
after --grace_s, and writes the new state into --out_dir as a few files (`study.chain_files`): the small
state, the latest checkpoint of a network in training, networks that this piece finished. A line per
piece (wall time, images/s, steps, stage, machine, commit) goes to <state>/chain_log.jsonl and out/piece.json.
"""
import time

_IMPORTED = time.time()  # a piece's budget counts from here unless --started_at says earlier

import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from absl import app, flags
from ml_collections import config_flags

from resnet_ensembles.study import chain_files, chain_git
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging
from resnet_ensembles.utils.provenance import git_commit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = "experiments/configs/reproduce.py:paper_jpeg"
PACK_SHA256 = "9dae0b34aa08d930678624e3c811869fe870aead60661f368a70bf1d81d7dc32"  # of ../shared/data/cifar10-jpeg
WHEELS = ("ml-collections==1.1.0",)  # pure Python, missing on the lent machine's image (absl-py, PyYAML are there)
TRAVEL_LIMIT = 64 << 20

_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(ROOT, DEFAULT_CONFIG),
                                          "Reproduce config file:preset (overrides: --config.x=y).")
_STATE = flags.DEFINE_string("state_dir", "results/paper110", "The chain's committed state.")
_WORK = flags.DEFINE_string("work_dir", "runs/paper_chain", "Where a piece works (wiped and re-seeded each piece).")
_OUT = flags.DEFINE_string("out_dir", None, "Where a piece writes the new state ($OUT on the lent machine).")
_BUDGET = flags.DEFINE_float("budget_s", 480, "Seconds after this command started at which the work is stopped "
                             "(SIGTERM). 480 + grace + collection fits one 600 s command with start-up.")
_STARTED = flags.DEFINE_float("started_at", 0, "Epoch seconds at which the piece's command started (the "
                               "wrapper's bootstrap counts against the budget); 0: when this program started.")
_GRACE = flags.DEFINE_float("grace_s", 60, "Seconds between SIGTERM and SIGKILL.")
_STOP_AFTER = flags.DEFINE_string("stop_after", "", "End the piece after this step (e.g. speed).")
_MEASURE = flags.DEFINE_bool("measure_speed", False, "A piece that runs only the speed step (--stop_after=speed).")
_ABSORB = flags.DEFINE_string("absorb", None, "A fetched out_dir: its state replaces --state_dir.")
_NETWORKS = flags.DEFINE_string("networks_dir", "", "Where --absorb puts finished networks (default "
                                "<state_dir>/networks; --commit commits them once and removes them from the tree).")
_COMMIT = flags.DEFINE_bool("commit", False, "With --absorb: git add + commit --state_dir (and the finished "
                            "networks, which a second commit takes out of the tree again, see networks.json).")
_RESTORE = flags.DEFINE_string("restore_networks", None, "Write every finished network recorded in "
                               "<state_dir>/networks.json out of git history into this folder (DIR/<run>/).")
_PREPARE = flags.DEFINE_bool("prepare", False, "Write .devdata (the CIFAR-10 pack, wheels, the commit) and "
                             "check the size of what a lent machine is sent.")
_DATA = flags.DEFINE_string("data_folder", None, "--prepare: the JPEG folder ($CIFAR10_DIR, else "
                            "../shared/data/cifar10-jpeg beside the checkout).")
_STATUS = flags.DEFINE_bool("status", False, "Print where the chain stands.")
_CHILD = flags.DEFINE_bool("child", False, "Internal: run the steps in --work_dir (a piece's child process).")


def _config_args() -> list[str]:
  """This command's --config and --config.x=y arguments, for the child (and the log)."""
  return [a for a in sys.argv[1:] if a.startswith("--config")]


def _load_config():
  return _CONFIG.value


# ---------------------------------------------------------------- the child: the steps

def child() -> None:
  from resnet_ensembles.study import chain, stages
  config = _load_config()
  try:
    ran = chain.run_steps(config, _WORK.value, stop_after=_STOP_AFTER.value or ("speed" if _MEASURE.value else ""))
  except stages.Preempted as e:
    print(f"[chain] stopped: {e}", flush=True)
    sys.exit(128 + signal.SIGTERM)
  print(f"[chain] steps run: {ran}", flush=True)


# ---------------------------------------------------------------- a piece

def _trained(work: str, runs) -> dict:
  out = {}
  for run in runs:
    path = os.path.join(work, "train", run, "metrics.jsonl")
    if os.path.exists(path):
      with open(path) as f:
        out[run] = [json.loads(l) for l in f if l.strip()]
  return out


def piece() -> int:
  from resnet_ensembles.study import chain  # imports JAX; this process never touches a device
  t0 = min(_STARTED.value or _IMPORTED, _IMPORTED)
  if not _OUT.value:
    raise ValueError("--out_dir is required for a piece")
  if any(os.path.exists(os.path.join(_OUT.value, n)) for n in ("piece.json", "state.tar", "state.tar.00")):
    raise FileExistsError(f"--out_dir {_OUT.value} holds a piece already")
  config = _load_config()
  steps = chain.steps_of(config)
  chain_files.seed(_STATE.value, _WORK.value)
  before_done = chain.done_steps(config, _WORK.value)
  before = {r: max((x["step"] for x in rows), default=0) for r, rows in _trained(_WORK.value, config.chain.runs).items()}
  flag_args = [f"--work_dir={_WORK.value}"] + (["--measure_speed"] if _MEASURE.value else []) + (
      [f"--stop_after={_STOP_AFTER.value}"] if _STOP_AFTER.value else [])
  cmd = [sys.executable, "-m", "experiments.paper_chain", "--child"] + flag_args + _config_args()
  print(f"[piece] state {_STATE.value} (piece {chain_files.piece_number(_STATE.value)}), done: "
        f"{before_done or 'nothing'}; budget {_BUDGET.value:.0f} s", flush=True)
  asked = []  # a SIGTERM to this process (a person, a scheduler) stops the piece as the budget does
  signal.signal(signal.SIGTERM, lambda signum, frame: asked.append(signum))
  proc = subprocess.Popen(cmd, cwd=os.getcwd())
  stopped = "finished"
  while proc.poll() is None and not asked and time.time() < t0 + _BUDGET.value:
    time.sleep(0.1)
  if proc.poll() is None:
    stopped = "sigterm" if asked else "budget"
    proc.send_signal(signal.SIGTERM)  # training: checkpoint at the next step, exit 143; other steps: exit now
    try:
      proc.wait(timeout=_GRACE.value)
    except subprocess.TimeoutExpired:
      stopped += ", killed"
      proc.kill()
      proc.wait()
  rc = proc.returncode
  if stopped == "finished" and rc != 0:
    stopped = f"error (exit {rc})"
  work_s = time.time() - t0
  after_done = chain.done_steps(config, _WORK.value)
  trained = _trained(_WORK.value, config.chain.runs)
  progress, images, rates = {}, 0, []
  for run, rows in trained.items():
    last = max((x["step"] for x in rows), default=0)
    if last != before.get(run, 0):
      progress[run] = [before.get(run, 0), last]
      images += (last - before.get(run, 0)) * config.train.batch_size
      rates += [x["train/images_per_sec"] for x in rows if x["step"] > before.get(run, 0) and "train/images_per_sec" in x]
  todo = [s for s in steps if s not in after_done]
  line = {"piece": chain_files.piece_number(_WORK.value) + 1, "started": chain_files.utc(t0),
          "wall_s": round(work_s, 1), "budget_s": _BUDGET.value, "stopped": stopped, "exit": rc,
          "steps_done_now": [s for s in after_done if s not in before_done], "stage": todo[0] if todo else "all done",
          "train_steps": progress, "train_images": images,
          "train_images_per_s": round(sum(rates) / len(rates), 1) if rates else None,
          "machine": chain_files.read_json(os.path.join(_WORK.value, "chain", "machine.json")),
          "git_commit": git_commit(), "config": _config_args()}
  written = chain_files.collect(_WORK.value, _OUT.value, line, chain.live_runs(config, _WORK.value))
  sizes = {n: os.path.getsize(os.path.join(_OUT.value, n)) for n in written}
  print(f"[piece] {json.dumps(line, sort_keys=True)}", flush=True)
  print(f"[piece] wrote {_OUT.value}: " + ", ".join(f"{n} {s / 1e6:.2f} MB" for n, s in sizes.items())
        + f"; {time.time() - t0:.0f} s in all; next: {line['stage']}", flush=True)
  return 0 if stopped in ("finished", "budget", "sigterm") else 1


# ---------------------------------------------------------------- here: prepare, absorb, status

def _travel_bytes(extra: list[str]) -> dict:
  """What the lent machine is sent from this checkout: tracked + untracked-not-ignored files + carried paths."""
  git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout
  size = lambda names: sum(os.path.getsize(os.path.join(ROOT, n)) for n in names
                           if os.path.isfile(os.path.join(ROOT, n)) and not os.path.islink(os.path.join(ROOT, n)))
  out = {"tracked": size(git("ls-files", "-z").split("\0")[:-1]),
         "untracked": size(git("ls-files", "-z", "-o", "--exclude-standard").split("\0")[:-1])}
  for path in extra:
    full = os.path.join(ROOT, path)
    out[path] = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(full) for f in fs)
  out["total"] = sum(out.values())
  return out


def prepare() -> None:
  import hashlib
  from resnet_ensembles.data import for_run, pack
  dev = os.path.join(ROOT, ".devdata")
  os.makedirs(os.path.join(dev, "wheels"), exist_ok=True)
  out = os.path.join(ROOT, ".devdata", "cifar10-jpeg.cifarpack")
  sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
  if not os.path.exists(out) or sha(out) != PACK_SHA256:
    folder = _DATA.value or os.environ.get("CIFAR10_DIR") or os.path.join(os.path.dirname(ROOT), "shared", "data",
                                                                            "cifar10-jpeg")
    print(f"packing {folder} into {out} ...", flush=True)
    pack.pack_folder(folder, out, description=for_run.describe_folder(folder))
    if sha(out) != PACK_SHA256:
      raise ValueError(f"{out} has sha256 {sha(out)}, not the {PACK_SHA256} of the shared JPEG copy: another "
                       "folder? (the chain's numbers are of that copy)")
  for req in WHEELS:
    name = req.split("==")[0].replace("-", "_")
    if not any(f.startswith(f"{name}-{req.split('==')[1]}-") for f in os.listdir(os.path.join(dev, "wheels"))):
      subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d",
                      os.path.join(dev, "wheels"), req], check=True)
  with open(os.path.join(dev, "commit.txt"), "w") as f:
    f.write(git_commit() + "\n")
  sizes = _travel_bytes([".devdata"])
  left = TRAVEL_LIMIT - sizes["total"]
  print("what a lent machine is sent: " + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in sizes.items())
        + f" of {TRAVEL_LIMIT >> 20} MiB ({left / 2**20:.2f} MiB to spare)")
  if left < 0:
    raise RuntimeError("over the 64 MiB a lent machine is sent: the run would be refused")
  if left < (14 << 20) and not glob.glob(os.path.join(_STATE.value, "train", "*", "checkpoints", "*")):
    print(f"WARNING: {left / 2**20:.1f} MiB to spare: a piece that trains a ResNet-110 hands back a state with a "
          "13.2 MiB checkpoint, and the next piece could not be sent. Free room first (docs/paper_chain.md, Size).")
  print("(the state holds one ResNet-110 checkpoint, 13.2 MiB, while a network trains: a piece that starts a "
        "training needs that much more room for the next)")
  print(f"commit {git_commit()}; now: device run with command 'bash experiments/paper_chain.sh', carry ['.devdata']")


def absorb() -> None:
  nets = _NETWORKS.value or os.path.join(_STATE.value, chain_files.NETWORKS)
  line = chain_files.absorb(_ABSORB.value, _STATE.value, nets)
  print(f"absorbed piece {line['piece']} into {_STATE.value}: stopped {line['stopped']}, {line['wall_s']} s, "
        f"done now {line['steps_done_now']}, next {line['stage']}")
  if _COMMIT.value:
    msg = (f"paper110 chain: piece {line['piece']} ({line['stopped']}; done {', '.join(line['steps_done_now']) or '-'}; "
           f"next {line['stage']})")
    commits = chain_git.commit_absorbed(os.getcwd(), _STATE.value, msg, nets)
    print(f"committed {commits[0][:10]}: {msg}")
    if len(commits) > 1:
      print(f"committed {commits[1][:10]}: the finished networks leave the tree (recorded in "
            f"{os.path.join(_STATE.value, chain_files.NETWORKS_JSON)}; --restore_networks=DIR brings them back)")
  elif os.path.isdir(nets) and os.listdir(nets):
    print(f"finished networks in {nets} (not committed, and sent to the next lent machine while untracked): "
          "commit them with the next --absorb ... --commit")


def restore_networks() -> None:
  runs = chain_git.restore_networks(os.getcwd(), _STATE.value, _RESTORE.value)
  print(f"restored {', '.join(runs)} into {_RESTORE.value} (each readable by store.checkpoints.load_trained)")


def status() -> None:
  from resnet_ensembles.study import chain
  config = _load_config()
  state = chain.describe(config, _STATE.value) if os.path.isdir(_STATE.value) else {"done": [], "next": "speed"}
  print(json.dumps({"piece": chain_files.piece_number(_STATE.value), **state,
                    "steps": chain.steps_of(config)}, indent=1))


@one_line_errors
def main(argv):
  del argv
  setup_logging()
  if _CHILD.value:
    return child()
  if _PREPARE.value:
    return prepare()
  if _ABSORB.value:
    return absorb()
  if _RESTORE.value:
    return restore_networks()
  if _STATUS.value:
    return status()
  sys.exit(piece())


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
