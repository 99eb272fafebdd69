"""The paper chain's piece supervisor and its preparation, without training: a child that ends, one stopped by the
budget, one that ignores SIGTERM and is killed, one stopped by a SIGTERM to the piece; `prepare` on a tiny image
folder in a temporary git repository (pack checked against its sha256, wheels fetched once, the size check)."""
import hashlib
import os
import subprocess
import sys
import time

import pytest

from resnet_ensembles.study.chain import piece as chain_piece
from tests.test_cifar_pack import _tiny_folder

PY = [sys.executable, "-c"]


@pytest.mark.parametrize("code, budget, stopped, rc", [
    ("pass", 30, "finished", 0),
    ("import sys; sys.exit(3)", 30, "error (exit 3)", 3),
    ("import time; time.sleep(60)", 0.5, "budget", -15),
    ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)",
     1.5, "budget, killed", -9),
])
def test_supervise_stops_the_child_at_the_budget(code, budget, stopped, rc):
  t0 = time.time()
  assert chain_piece.supervise(PY + [code], t0 + budget, grace_s=0.5, asked=lambda: False) == (stopped, rc)
  assert time.time() - t0 < 20


def test_supervise_stops_the_child_when_asked():
  asked_at = time.time() + 0.5
  assert chain_piece.supervise(PY + ["import time; time.sleep(60)"], time.time() + 60, grace_s=5,
                               asked=lambda: time.time() > asked_at) == ("sigterm", -15)


def _repo(path):
  env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
  subprocess.run(["git", "init", "-q", str(path)], check=True)
  (path / "code.py").write_text("x = 1\n")
  (path / ".gitignore").write_text(".devdata/\n")
  subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
  subprocess.run(["git", "-C", str(path), "commit", "-qm", "init"], check=True, env=env)
  return str(path)


def test_prepare_packs_checks_and_fetches_wheels_once(tmp_path, capsys):
  folder = _tiny_folder(str(tmp_path / "folder"))
  repo = _repo(tmp_path / "repo")
  fetched = []

  def download(req, dest):
    fetched.append(req)
    name, version = req.split("==")
    with open(os.path.join(dest, f"{name.replace('-', '_')}-{version}-py3-none-any.whl"), "wb") as f:
      f.write(b"wheel")

  with pytest.raises(ValueError, match="not the 00ff of the shared JPEG copy"):
    chain_piece.prepare(repo, folder, "00ff", str(tmp_path / "state"), download=download)
  pack = os.path.join(repo, ".devdata", "cifar10-jpeg.cifarpack")
  sha = hashlib.sha256(open(pack, "rb").read()).hexdigest()
  for _ in range(2):
    chain_piece.prepare(repo, folder, sha, str(tmp_path / "state"), download=download)
  assert fetched == list(chain_piece.WHEELS)  # the second preparation found the wheel
  assert sorted(os.listdir(os.path.join(repo, ".devdata"))) == ["cifar10-jpeg.cifarpack", "commit.txt", "wheels"]
  sizes = chain_piece.travel_bytes(repo, [".devdata"])
  assert sizes["tracked"] == len("x = 1\n") + len(".devdata/\n") and sizes["untracked"] == 0
  assert sizes[".devdata"] == os.path.getsize(pack) + len(b"wheel") + os.path.getsize(
      os.path.join(repo, ".devdata", "commit.txt"))
  out = capsys.readouterr().out
  assert "MiB to spare" in out and "WARNING" not in out
