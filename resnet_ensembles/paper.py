"""The paper's (and its references') published numbers, read from the one cited data file."""
from __future__ import annotations

import functools
import json
import os

_PATH = os.path.join(os.path.dirname(__file__), "paper_numbers.json")


@functools.lru_cache(maxsize=None)
def numbers() -> dict:
  """The whole table; entries name their source in `numbers()["sources"]`."""
  with open(_PATH) as f:
    return json.load(f)
