r"""The paper's ResNet-110 study advanced in resumable pieces of any length, on any processor (docs/paper_chain.md).

On a GPU reached for short commands (the 164-epoch paper-scale study, preset `paper_jpeg`):
  python -m experiments.paper_chain --prepare                          # here: data, wheels, commit, size check
  OUT=<dir> bash experiments/paper_chain.sh                            # there: one piece (<dir> gets the state)
  python -m experiments.paper_chain --absorb=<dir> --commit            # here: the piece's state -> results/paper110
  python -m experiments.paper_chain --restore_networks=DIR             # here: finished networks out of git history
On a CPU, in the background (the 40-epoch ResNet-110, preset `resnet110_cpu`, state in results/resnet110_cpu):
  python -m experiments.paper_chain --config=experiments/configs/reproduce.py:resnet110_cpu --prepare
  nice python -m experiments.paper_chain --config=experiments/configs/reproduce.py:resnet110_cpu \
      --budget_s=36000 --out_dir=runs/piece_out                        # stop early with SIGTERM: it checkpoints
  python -m experiments.paper_chain --config=experiments/configs/reproduce.py:resnet110_cpu \
      --absorb=runs/piece_out --commit

A piece: copies the chain's state (--state_dir, the preset's chain.state_dir) into --work_dir, runs the next steps of
`resnet_ensembles.study.chain.runner` in a child process, sends it SIGTERM when --budget_s has passed since this
command started (training checkpoints at the next step; any other step dies at once and is redone), SIGKILL
after --grace_s, and writes the new state into --out_dir as a few files (`study.chain.files`): the small
state, the latest checkpoint of a network in training, networks that this piece finished. A line per
piece (wall time, images/s, steps, stage, machine, commit) goes to <state>/chain_log.jsonl and out/piece.json.
"""
import time

_IMPORTED = time.time()  # a piece's budget counts from here unless --started_at says earlier

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from absl import app, flags
from ml_collections import config_flags

from resnet_ensembles.study.chain import files as chain_files, git as chain_git
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = "experiments/configs/reproduce.py:paper_jpeg"
STATUS = "status.md"  # <state>/status.md: the steps and one row per piece, rewritten by every --absorb
PACK_SHA256 = "9dae0b34aa08d930678624e3c811869fe870aead60661f368a70bf1d81d7dc32"  # of ../shared/data/cifar10-jpeg

_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(ROOT, DEFAULT_CONFIG),
                                          "Reproduce config file:preset (overrides: --config.x=y).")
_STATE = flags.DEFINE_string("state_dir", "", "The chain's committed state (default: the preset's "
                             "chain.state_dir, results/paper110 or results/resnet110_cpu).")
_WORK = flags.DEFINE_string("work_dir", "", "Where a piece works (wiped and re-seeded each piece; default "
                            "runs/chain_<name of the state folder>).")
_OUT = flags.DEFINE_string("out_dir", None, "Where a piece writes the new state (e.g. $OUT on a remote GPU machine).")
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
                             "check the size of what a remote machine is sent.")
_DATA = flags.DEFINE_string("data_folder", None, "--prepare: the JPEG folder ($CIFAR10_DIR, else "
                            "../shared/data/cifar10-jpeg beside the checkout).")
_STATUS = flags.DEFINE_bool("status", False, "Print where the chain stands.")
_CHILD = flags.DEFINE_bool("child", False, "Internal: run the steps in --work_dir (a piece's child process).")


def _config_args() -> list[str]:
  """This command's --config and --config.x=y arguments, for the child (and the log)."""
  return [a for a in sys.argv[1:] if a.startswith("--config")]


def _load_config():
  return _CONFIG.value


def _state() -> str:
  return _STATE.value or _load_config().chain.state_dir


def _work() -> str:
  return _WORK.value or os.path.join("runs", "chain_" + os.path.basename(_state().rstrip("/")))


# ---------------------------------------------------------------- the child: the steps

def child() -> None:
  from resnet_ensembles.study import stages
  from resnet_ensembles.study.chain import runner as chain
  config = _load_config()
  try:
    ran = chain.run_steps(config, _work(), stop_after=_STOP_AFTER.value or ("speed" if _MEASURE.value else ""))
  except stages.Preempted as e:
    print(f"[chain] stopped: {e}", flush=True)
    sys.exit(128 + signal.SIGTERM)
  print(f"[chain] steps run: {ran}", flush=True)


def piece() -> int:
  from resnet_ensembles.study.chain import piece as chain_piece, runner as chain  # imports JAX; no device here
  if (_MEASURE.value or _STOP_AFTER.value) and (_STOP_AFTER.value or "speed") not in chain.steps_of(_load_config()):
    raise ValueError(f"this preset's chain has no step {_STOP_AFTER.value or 'speed'!r}; its steps: "
                     f"{', '.join(chain.steps_of(_load_config()))}")
  flag_args = [f"--work_dir={_work()}"] + (["--measure_speed"] if _MEASURE.value else []) + (
      [f"--stop_after={_STOP_AFTER.value}"] if _STOP_AFTER.value else [])
  return chain_piece.run_piece(
      _load_config(), state_dir=_state(), work_dir=_work(), out_dir=_OUT.value,
      child_cmd=[sys.executable, "-m", "experiments.paper_chain", "--child"] + flag_args + _config_args(),
      started=min(_STARTED.value or _IMPORTED, _IMPORTED), budget_s=_BUDGET.value, grace_s=_GRACE.value,
      config_args=_config_args())


# ---------------------------------------------------------------- here: prepare, absorb, status

def prepare() -> None:
  from resnet_ensembles.study.chain import piece as chain_piece
  folder = _DATA.value or os.environ.get("CIFAR10_DIR") or os.path.join(os.path.dirname(ROOT), "shared", "data",
                                                                          "cifar10-jpeg")
  chain_piece.prepare(ROOT, folder, PACK_SHA256, _state())


def absorb() -> None:
  nets = _NETWORKS.value or os.path.join(_state(), chain_files.NETWORKS)
  line = chain_files.absorb(_ABSORB.value, _state(), nets)
  from resnet_ensembles.study.chain import runner as chain  # JAX, for the step names; the absorb above needs none
  with open(os.path.join(_state(), STATUS), "w") as f:
    f.write(chain.status_markdown(_load_config(), _state()))
  print(f"absorbed piece {line['piece']} into {_state()}: stopped {line['stopped']}, {line['wall_s']} s, "
        f"done now {line['steps_done_now']}, next {line['stage']}")
  if _COMMIT.value:
    msg = (f"{os.path.basename(_state().rstrip('/'))} chain: piece {line['piece']} ({line['stopped']}; done {', '.join(line['steps_done_now']) or '-'}; "
           f"next {line['stage']})")
    commits = chain_git.commit_absorbed(os.getcwd(), _state(), msg, nets)
    print(f"committed {commits[0][:10]}: {msg}")
    if len(commits) > 1:
      print(f"committed {commits[1][:10]}: the finished networks leave the tree (recorded in "
            f"{os.path.join(_state(), chain_files.NETWORKS_JSON)}; --restore_networks=DIR brings them back)")
  elif os.path.isdir(nets) and os.listdir(nets):
    print(f"finished networks in {nets} (not committed, and sent to the next machine while untracked): "
          "commit them with the next --absorb ... --commit")


def restore_networks() -> None:
  runs = chain_git.restore_networks(os.getcwd(), _state(), _RESTORE.value)
  print(f"restored {', '.join(runs)} into {_RESTORE.value} (each readable by store.checkpoints.load_trained)")


def status() -> None:
  from resnet_ensembles.study.chain import runner as chain
  config = _load_config()
  state = chain.describe(config, _state()) if os.path.isdir(_state()) else {"done": [], "next": chain.steps_of(config)[0]}
  print(json.dumps({"piece": chain_files.piece_number(_state()), **state,
                    "steps": chain.steps_of(config)}, indent=1))
  if os.path.isdir(_state()):
    print(chain.status_markdown(config, _state()))


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
