"""The llama2.c tokenizer file, and text <-> token ids with it (SentencePiece-style BPE over UTF-8).

File: int32 max_token_length, then for each of vocab_size tokens (the model's header gives the count, not the
file) a float32 merge score, an int32 byte length and the token's bytes. Ids 0, 1, 2 are <unk>, <s> (BOS),
</s> (EOS); ids 3..258 are the raw bytes <0x00>..<0xFF>.

Encoding: a space is prepended to non-empty text; each UTF-8 character becomes its token, or its bytes'
tokens when it has none; then the adjacent pair whose concatenation is a token with the highest score is
merged (the leftmost on ties), until no pair is a token. A heap of candidate pairs makes this n log n where
the plain rescan is quadratic; the result is the same. Decoding drops the space that follows BOS and turns
<0xNN> tokens back into bytes.
"""
from __future__ import annotations

import dataclasses
import heapq
import os
import re
import struct

import numpy as np

BOS, EOS = 1, 2
_BYTE = re.compile(rb"^<0x([0-9A-Fa-f]{2})>$")


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  pieces: tuple[bytes, ...]
  scores: tuple[float, ...]
  max_token_length: int

  @property
  def vocab_size(self) -> int:
    return len(self.pieces)

  @property
  def ids(self) -> dict[bytes, int]:
    return _ids(self)

  def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
    """Token ids of `text` (BOS first when `bos`, EOS last when `eos`)."""
    ids = self.ids
    tokens = []
    if text:
      text = " " + text
    for char in text:
      raw = char.encode("utf-8")
      if raw in ids:
        tokens.append(ids[raw])
      else:
        tokens.extend(b + 3 for b in raw)
    tokens = _merge(tokens, self.pieces, self.scores, ids)
    return ([BOS] if bos else []) + tokens + ([EOS] if eos else [])

  def piece(self, token: int, previous: int = -1) -> bytes:
    """The bytes token `token` prints as, following `previous`."""
    raw = self.pieces[token]
    if previous == BOS and raw.startswith(b" "):
      raw = raw[1:]
    match = _BYTE.match(raw)
    return bytes([int(match.group(1), 16)]) if match else raw

  def decode(self, tokens, previous: int = -1) -> str:
    """The text of a token sequence (UTF-8; undecodable bytes replaced); BOS and EOS print nothing."""
    out = []
    for t in tokens:
      if int(t) not in (BOS, EOS):
        out.append(self.piece(int(t), previous))
      previous = int(t)
    return b"".join(out).decode("utf-8", errors="replace")


_ID_CACHE: dict[int, dict[bytes, int]] = {}


def _ids(tok: Tokenizer) -> dict[bytes, int]:
  key = id(tok)
  if key not in _ID_CACHE:
    ids = {}
    for i, p in enumerate(tok.pieces):
      ids.setdefault(p, i)  # the first id of a piece, as a sorted lookup of distinct pieces finds it
    _ID_CACHE[key] = ids
  return _ID_CACHE[key]


def _merge(tokens: list[int], pieces, scores, ids) -> list[int]:
  """Greedy BPE merges over a linked list; stale heap entries are skipped when popped."""
  n = len(tokens)
  if n < 2:
    return tokens
  tok, nxt, prv, alive = list(tokens), list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
  heap = []

  def push(i):
    j = nxt[i]
    if j < n:
      merged = ids.get(pieces[tok[i]] + pieces[tok[j]])
      if merged is not None:
        heapq.heappush(heap, (-scores[merged], i, tok[i], tok[j], merged))

  for i in range(n - 1):
    push(i)
  while heap:
    _, i, left, right, merged = heapq.heappop(heap)
    j = nxt[i] if alive[i] else n
    if j >= n or tok[i] != left or tok[j] != right:
      continue  # a neighbour changed since this pair was queued
    tok[i], alive[j] = merged, False
    nxt[i] = nxt[j]
    if nxt[j] < n:
      prv[nxt[j]] = i
    if prv[i] >= 0:
      push(prv[i])
    push(i)
  return [tok[i] for i in range(n) if alive[i]]


def load(path: str, vocab_size: int) -> Tokenizer:
  """A llama2.c tokenizer file of `vocab_size` tokens; one-line ValueError for a damaged or foreign file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"tokenizer file {path} does not exist")
  data = open(path, "rb").read()
  bad = lambda why: ValueError(f"{path}: not a llama2.c tokenizer of {vocab_size} tokens: {why}")
  if len(data) < 4:
    raise bad(f"{len(data)} bytes, shorter than the 4-byte header")
  max_len, = struct.unpack_from("<i", data, 0)
  if not 0 < max_len < 1 << 16:
    raise bad(f"max_token_length {max_len} is not plausible")
  pos, pieces, scores = 4, [], []
  for i in range(vocab_size):
    if pos + 8 > len(data):
      raise bad(f"the file ends at token {i}")
    score, length = struct.unpack_from("<fi", data, pos)
    if not 0 <= length <= max_len or not np.isfinite(score):
      raise bad(f"token {i} has length {length} (max {max_len}) and score {score}")
    pieces.append(data[pos + 8:pos + 8 + length])
    scores.append(score)
    pos += 8 + length
    if len(pieces[-1]) != length:
      raise bad(f"the file ends inside token {i}")
  if pos != len(data):
    raise bad(f"{len(data) - pos} bytes follow the last token (a tokenizer for another vocabulary size?)")
  if vocab_size > 258 and any(pieces[3 + b] != f"<0x{b:02X}>".encode() for b in range(256)):
    raise bad("ids 3..258 are not the 256 byte tokens <0x00>..<0xFF>")
  return Tokenizer(tuple(pieces), tuple(scores), max_len)
