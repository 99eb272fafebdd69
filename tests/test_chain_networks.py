"""Finished networks of the paper chain survive in git history, not in the tree: `paper_chain --absorb ... --commit`
commits a piece's finished networks with its state under results/paper110/networks/<run>/, removes them from the
tree in a second commit that records the first in results/paper110/networks.json, and `--restore_networks=DIR`
brings them back byte for byte. In a temporary git repository (the real one is never committed to); the pieces
are written by the chain's own `collect` from hand-made work folders (no JAX, no training)."""
import json
import os
import subprocess
import sys

from resnet_ensembles.study.chain import files as chain_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE = os.path.join("results", "paper110")


def _git(repo, *args):
  return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _chain(repo, *args):
  env = dict(os.environ, PYTHONPATH=ROOT, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
             GIT_COMMITTER_EMAIL="t@t", JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-m", "experiments.paper_chain", f"--state_dir={STATE}", *args], cwd=repo,
                        env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


def _piece(repo, tmp, n, network=None):
  """Piece n as the machine that ran it hands it back, from the committed state; `network`: a run it finished."""
  work, out = str(tmp / f"work{n}"), str(tmp / f"out{n}")
  chain_files.seed(os.path.join(repo, STATE), work)
  chain_files.write_json({"step": f"step{n}"}, os.path.join(work, "chain", f"step{n}.done.json"))
  blob = None
  if network:
    blob = os.urandom(50_000) + network.encode()
    os.makedirs(os.path.join(work, chain_files.RETIRED, network))
    with open(os.path.join(work, chain_files.RETIRED, network, "variables.msgpack"), "wb") as f:
      f.write(blob)
    chain_files.write_json({"model": {"depth": 110}}, os.path.join(work, chain_files.RETIRED, network, "config.json"))
    chain_files.write_json({"retired": {"variables_sha256": f"fp-{network}"}},
                           os.path.join(work, "chain", f"sweeps-{network}.done.json"))
  line = {"piece": n, "stopped": "finished", "wall_s": 1.0, "steps_done_now": [f"step{n}"], "stage": "next"}
  names = chain_files.collect(work, out, line, [])
  assert ("networks.tar" in names) == bool(network)
  return out, blob


def test_absorb_commit_restore_round_trip(tmp_path):
  real_head = _git(ROOT, "rev-parse", "HEAD")
  repo = tmp_path / "repo"
  os.makedirs(repo / STATE)
  (repo / STATE / "README.md").write_text("state\n")
  _git(repo, "init", "-q")
  _git(repo, "add", "-A")
  _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
  nets, blobs = repo / STATE / chain_files.NETWORKS, {}

  for n, network in ((1, "resnet"), (2, None), (3, "plain")):
    before = int(_git(repo, "rev-list", "--count", "HEAD"))
    out, blobs[network] = _piece(repo, tmp_path, n, network)
    _chain(repo, f"--absorb={out}", "--commit")
    assert int(_git(repo, "rev-list", "--count", "HEAD")) == before + (2 if network else 1)
    assert _git(repo, "status", "--porcelain") == ""            # everything committed
    assert not nets.exists()                                    # and the networks out of the tree,
    assert f"{STATE}/networks/" not in _git(repo, "ls-tree", "-r", "--name-only", "HEAD")  # of HEAD too
    assert (repo / STATE / "chain" / f"step{n}.done.json").exists() and (repo / STATE / "README.md").exists()
    record = json.loads((repo / STATE / chain_files.NETWORKS_JSON).read_text())
    assert sorted(record) == sorted(r for r in ("resnet", "plain")[:1 + (n == 3)])
    if network:
      entry = record[network]
      assert entry["commit"] == _git(repo, "rev-parse", "HEAD~1") and entry["variables_sha256"] == f"fp-{network}"
      assert entry["path"] == f"{STATE}/networks/{network}" and entry["files"] == ["config.json", "variables.msgpack"]
      shown = subprocess.run(["git", "-C", str(repo), "show", f"{entry['commit']}:{entry['path']}/variables.msgpack"],
                             check=True, capture_output=True).stdout
      assert shown == blobs[network]
  state = json.loads((repo / STATE / "chain" / "state.json").read_text())
  assert state["piece"] == 3

  # absorbed without --commit: the network waits in the state's networks/ and survives the next absorb
  out, blob4 = _piece(repo, tmp_path, 4, "sd")
  _chain(repo, f"--absorb={out}")
  assert (nets / "sd" / "variables.msgpack").read_bytes() == blob4
  out, _ = _piece(repo, tmp_path, 5)  # (its state.tar leaves networks/ out) ... committed with the next piece
  _chain(repo, f"--absorb={out}", "--commit")
  record = json.loads((repo / STATE / chain_files.NETWORKS_JSON).read_text())
  assert sorted(record) == ["plain", "resnet", "sd"] and not nets.exists() and _git(repo, "status", "--porcelain") == ""
  assert "networks sd leave the tree" in _git(repo, "log", "-1", "--format=%s")

  dest = tmp_path / "restored"
  assert "restored plain, resnet, sd" in _chain(repo, f"--restore_networks={dest}")
  for run, blob in (("resnet", blobs["resnet"]), ("plain", blobs["plain"]), ("sd", blob4)):
    assert (dest / run / "variables.msgpack").read_bytes() == blob
    assert json.loads((dest / run / "config.json").read_text()) == {"model": {"depth": 110}}
  assert _git(ROOT, "rev-parse", "HEAD") == real_head  # the real repository: no commit
