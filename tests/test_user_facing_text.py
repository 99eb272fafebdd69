"""Every tracked text speaks of the project and its users, not of how or where it was built.

A researcher who clones this repository has none of the circumstances it was made in: its numbered stretches
of work, the tracker its tasks were filed in, the notes those tasks came with, machines it borrowed for a while,
the remote-execution service of the site it was built at (its calls and the fields of its replies), the folders
of the machine it was built on (FORBIDDEN lists the exact patterns). Text naming them reads as instructions the
user cannot follow or paths that do not exist on their machine; facts that matter are said in the user's terms instead
("measured on a 2-core x86 CPU", "a GPU reached for commands of at most 10 minutes"). Code that needs a
temporary folder asks `tempfile` or `mktemp` for one rather than writing `/tmp/`.

Scanned: every file `git ls-files` lists that decodes as UTF-8, except the records programs wrote (`.json`,
`.jsonl`, `.csv`: a run's arguments as it was given them, such as the folder it wrote to, belong to the record)
and this file, which spells the patterns. Each pattern is narrow enough to leave ordinary words alone (a pytest
"session", "a brief summary", "silent"): `test_patterns_tell_process_words_from_ordinary_ones` pins both sides.

The last tests recompute from the committed JSON the numbers of the sentences that were once wrong (a share
computed from rounded values, a fit quoted from fewer networks, a claim that held at two of three span lengths),
so those sentences cannot drift from their data again.
"""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SELF = "tests/test_user_facing_text.py"
RECORDS = (".json", ".jsonl", ".csv")

# Files whose texts are being rewritten separately; each still has a hit, which
# `test_pending_cleanup_is_still_needed` checks, so the list only shrinks (empty now: every file is clean).
PENDING_CLEANUP = ()

_NOT_PATH = r"(?<![\w.~$}-])"   # a path's start, not a folder of that name inside a relative path
FORBIDDEN = {
    "a numbered work session": r"\bsessions? \d",
    "a work session's span": r"\b(?:working sessions?|session starts?|session's machine|when a session ends)\b",
    "a numbered work period": r"\b(?:work(?:ing)? )?periods? \d",
    "an issue number": r"\bissues? #?\d+",
    "a task's planning notes, by their name": r"\b(?:the|this|a) brief\b(?=\s*(?:[.,;:)]|$|asked|asks|says|said|wants))",
    "a machine borrowed for a while": r"\blent\b",
    "one site's remote-execution service": r"\bdevice tool\b|\brun\(command=",
    "that service's reply fields and calls": r"\b(?:files_at|files_fetch|give_back|budget_left_s|can_start_another)\b",
    "a build machine's folder": _NOT_PATH + r"/(?:work|tmp)/|" + _NOT_PATH + r"/home/[a-z]",
}
_PATTERN = re.compile("|".join(f"(?P<p{i}>{p})" for i, p in enumerate(FORBIDDEN.values())),
                      re.IGNORECASE | re.MULTILINE)
_NAMES = list(FORBIDDEN)


def hits(text: str) -> list[str]:
  """'line N: <why>: <the line>' for every forbidden pattern in `text`."""
  out = []
  for m in _PATTERN.finditer(text):
    line = text.count("\n", 0, m.start()) + 1
    why = _NAMES[int(m.lastgroup[1:])]
    out.append(f"line {line}: {why}: {text.splitlines()[line - 1].strip()[:120]}")
  return out


def _tracked_texts() -> dict[str, str]:
  files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
  out = {}
  for path in files.decode().split("\0"):
    if not path or path == SELF or path.endswith(RECORDS) or not os.path.isfile(os.path.join(ROOT, path)):
      continue
    with open(os.path.join(ROOT, path), "rb") as f:
      data = f.read()
    try:
      out[path] = data.decode("utf-8")
    except UnicodeDecodeError:   # figures, weights, event files
      continue
    if "\0" in out[path]:
      del out[path]
  return out


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
  if not os.path.isdir(os.path.join(ROOT, ".git")) and not os.path.isfile(os.path.join(ROOT, ".git")):
    pytest.skip("not a git checkout: no tracked files to read")
  return _tracked_texts()


def test_tracked_texts_name_no_process_words_or_machine_paths(texts):
  assert len(texts) > 50 and "README.md" in texts   # the scan reads the repository, not an empty list
  found = {p: hits(t) for p, t in texts.items() if p not in PENDING_CLEANUP}
  found = {p: h for p, h in found.items() if h}
  assert not found, "texts a user reads name how or where the project was built:\n" + "\n".join(
      f"{p} {h}" for p, hs in found.items() for h in hs)


def test_pending_cleanup_is_still_needed(texts):
  """An allow-listed file that is clean (or gone) leaves the list: the list only shrinks."""
  stale = [p for p in PENDING_CLEANUP if p not in texts or not hits(texts[p])]
  assert not stale, f"remove from PENDING_CLEANUP (clean now or not tracked): {stale}"


@pytest.mark.parametrize("text", [
    "measured in session 12", "over sessions 9-12", "two session starts", "on this session's machine",
    "in work period 3", "(issue 18)", "see issue #22", "the brief asked for depth 8", "as in the brief.",
    "a lent H200", "the device tool", 'run(command="bash x.sh")', "<files_at of the reply>", "call give_back",
    "data in /work/shared/data", "OUT=/tmp/out", "cd /home/alice/src"])
def test_patterns_catch_process_words(text):
  assert hits(text), text


@pytest.mark.parametrize("text", [
    "one compilation cache for the whole test session", "a fresh folder per session",
    "@pytest.fixture(scope='session')",
    "a brief summary of the sweep", "briefly", "the silent default", "excellent", "issues with BatchNorm",
    "the grace period", "runs/work/x", "tempfile.mkdtemp()", "path.startswith('/tmpfs')", "$HOME/.cache"])
def test_patterns_tell_process_words_from_ordinary_ones(text):
  assert not hits(text), hits(text)


# --- numbers in prose: recomputed here from the committed JSON, so a sentence cannot drift from its data ---

def _read(rel: str) -> str:
  with open(os.path.join(ROOT, rel)) as f:
    return " ".join(f.read().split())   # prose wraps lines: compare with single spaces


def _json(rel: str) -> dict:
  import json
  with open(os.path.join(ROOT, rel)) as f:
    return json.load(f)


def test_depth_series_prose_numbers_come_from_series_json():
  s = _json("results/depth_series/series.json")
  nets = ["resnet20", "resnet32", "resnet44", "resnet56"]
  # the share of a deletion's stored cost that re-estimating statistics removes, from absolute errors against
  # the deployed network (series.json's "stale" pairs: each recalibrated lesion beside its stored twin)
  share = lambda bn, kind: [round(100 * s["networks"][n][bn]["stale"][kind]["share"]) for n in nets
                            if s["networks"][n][bn].get("stale")]
  typical, opener = share("recalibrate_all", "typical"), share("recalibrate_all", "opener")
  for n in nets:  # recomputed from the pair's mean errors, not read from the share field
    st = s["networks"][n]["recalibrate_all"]["stale"]["typical"]
    assert abs(st["share"] - (st["stored_error"] - st["recalibrated_error"]) / (st["stored_error"] - s["networks"][n]["recalibrate_all"]["stale"]["deployed"])) < 1e-9
  pct = lambda v: f"{v[0]}%, {v[1]}%, {v[2]}% and {v[3]}%"
  page, readme = _read("results/depth_series/README.md"), _read("README.md")
  assert (f"re-estimating every statistic takes away {pct(typical)} of the typical deletion's stored cost at 9, 15, "
          f"21 and 27 blocks and {pct(opener)} of an opener's") in page
  assert (f"re-estimating every statistic removes {' / '.join(map(str, typical))}% of it at 9 / 15 / 21 / 27 "
          f"blocks, recalibrating from the lesion on {' / '.join(map(str, share('recalibrate', 'typical')))}%") in readme
  fits, paper = s["fits"]["stored"], s["paper_effects"]
  assert (f"The fit puts the upper end at {fits['window_hi_frac']['at_54']:.3f} n at 54 blocks, short of the "
          f"paper's {paper['window'][1]:.3f} n (an undershoot), and the decay at x{fits['decay']['at_54']:.3f}") in page
  assert fits["window_hi_frac"]["at_54"] < paper["window"][1]
  assert fits["window_hi_frac"]["points"] == fits["decay"]["points"] == len(nets)   # the fit over all four
  k_match = [n for n in s["networks"] if all(s["networks"][n]["recalibrate_all"]["verdicts"]["k"][f] == "yes"
                                            for f in ("0.1", "0.2"))]
  assert k_match == ["resnet32", "resnet44", "resnet56"]
  assert "With every statistic re-estimated, the imported ResNet-32, -44 and -56 all match the paper at 10% and 20%" in page
  with open(os.path.join(ROOT, "results/depth_series/series.md")) as f:
    series_md = f.read()
  start = series_md.index("| network | n | BN |")
  glance = series_md[start:series_md.index("\n\n", start)]
  with open(os.path.join(ROOT, "results/depth_series/README.md")) as f:
    assert glance in f.read(), "results/depth_series/README.md's table differs from series.md's glance table"


def test_vit_painters_prose_follows_comparison_json():
  v = _json("results/vit/study/comparison.json")["painters"]["variants"]
  cost = lambda kind, n: 100 * v[kind][str(n)]["cost"]
  gentlest = {n: min(("skip", "shuffle", "reverse", "parallel"), key=lambda k: cost(k, n)) for n in (2, 3, 4)}
  assert gentlest[2] == gentlest[3] == "parallel" and gentlest[4] == "shuffle"
  assert (f"parallel costs least at 2 and 3 layers ({cost('parallel', 2):+.2f}, {cost('parallel', 3):+.2f}) but "
          f"not at 4, where it costs {cost('parallel', 4):+.2f} and a shuffle {cost('shuffle', 4):+.2f}"
          ) in _read("README.md")
  assert (f"It is the gentlest of the four lesions at N=2 and 3, as Sun et al. found, but not at N=4, where a "
          f"shuffle costs less ({cost('shuffle', 4):+.2f} against {cost('parallel', 4):+.2f})"
          ) in _read("results/vit/README.md")
