"""Finished networks of a chain in git history (experiments/paper_chain.py --commit / --restore_networks).

`commit_absorbed` commits an absorbed state with its finished networks in one commit and takes the networks
out of the tree in the next (what a remote machine is sent stays small), recording the first commit in
state_dir/networks.json; `restore_networks` reads them back out of git history. Standard library only.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Iterable, Optional

from resnet_ensembles.study.chain.files import NETWORKS, NETWORKS_JSON, read_json, utc, write_json
from resnet_ensembles.study.chain.tar import walk_files
from resnet_ensembles.utils.provenance import sha256


def _git(repo: str, *args: str, data: bool = False):
  out = subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True)
  return out.stdout if data else out.stdout.decode().strip()


def commit_absorbed(repo: str, state_dir: str, message: str, networks_dir: Optional[str] = None) -> list[str]:
  """Commits state_dir (absorbed) in `repo`. When networks_dir (default state_dir/networks) holds finished
  networks, they are committed with the state in that commit, then removed from the tree in a second commit
  that records the first one's hash per run in state_dir/networks.json (`restore_networks` reads them back).
  Relative paths are taken from `repo`. Returns the commits made."""
  repo = os.path.realpath(repo)
  state_dir = os.path.join(repo, state_dir)
  networks_dir = os.path.join(repo, networks_dir or os.path.join(state_dir, NETWORKS))
  top = os.path.realpath(_git(repo, "rev-parse", "--show-toplevel"))
  runs = sorted(os.listdir(networks_dir)) if os.path.isdir(networks_dir) else []
  rel_nets = os.path.relpath(os.path.realpath(networks_dir), top)
  if runs and rel_nets.startswith(".."):
    raise ValueError(f"--commit: the networks folder {networks_dir} is not inside the repository {top}")
  paths = [state_dir] + ([networks_dir] if runs else [])
  _git(repo, "add", "-A", "--", *paths)
  _git(repo, "commit", "-q", "--allow-empty", "-m", message, "--", *paths)
  first = _git(repo, "rev-parse", "HEAD")
  if not runs:
    return [first]
  record_path = os.path.join(state_dir, NETWORKS_JSON)
  record = read_json(record_path, {})
  for run in runs:
    files = sorted(os.path.relpath(f, run).replace(os.sep, "/") for f in walk_files(networks_dir, [run]))
    entry = {"commit": first, "path": f"{rel_nets}/{run}".replace(os.sep, "/"), "files": files,
             "absorbed": utc()}
    if "variables.msgpack" in files:
      entry["variables_msgpack_sha256"] = sha256(os.path.join(networks_dir, run, "variables.msgpack"))
    retired = read_json(os.path.join(state_dir, "chain", f"sweeps-{run}.done.json"), {}).get("retired", {})
    if "variables_sha256" in retired:
      entry["variables_sha256"] = retired["variables_sha256"]  # checkpoints.fingerprint of the network
    record[run] = entry
  write_json(record, record_path)
  _git(repo, "rm", "-r", "-q", "--", networks_dir)
  shutil.rmtree(networks_dir, ignore_errors=True)
  _git(repo, "add", "--", record_path)
  _git(repo, "commit", "-q", "-m", f"paper110 chain: networks {', '.join(runs)} leave the tree (kept in "
       f"{first[:10]}; `python -m experiments.paper_chain --restore_networks=DIR`)", "--", networks_dir, record_path)
  return [first, _git(repo, "rev-parse", "HEAD")]


def restore_networks(repo: str, state_dir: str, dest: str, runs: Optional[Iterable[str]] = None) -> list[str]:
  """Writes each network recorded in state_dir/networks.json from the commit that holds it into dest/<run>/
  (readable by `checkpoints.load_trained`); checks the variables' sha256. Relative paths are taken from `repo`
  (dest: from the current folder). Returns the runs written."""
  record = read_json(os.path.join(repo, state_dir, NETWORKS_JSON), {})
  if not record:
    raise FileNotFoundError(f"{os.path.join(state_dir, NETWORKS_JSON)}: no finished network recorded yet")
  done = []
  for run in (runs or sorted(record)):
    entry = record[run]
    out = os.path.join(dest, run)
    for name in entry["files"]:
      blob = _git(repo, "show", f"{entry['commit']}:{entry['path']}/{name}", data=True)
      os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
      with open(os.path.join(out, name), "wb") as f:
        f.write(blob)
    want = entry.get("variables_msgpack_sha256")
    if want and sha256(os.path.join(out, "variables.msgpack")) != want:
      raise ValueError(f"{out}/variables.msgpack from {entry['commit'][:10]} is not the network recorded")
    done.append(run)
  return done
