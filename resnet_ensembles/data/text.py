"""Evaluation text for a language model: stories -> token ids -> next-token windows.

The text holds stories, each followed by a line `<|endoftext|>` (TinyStories' format). As llama2.c prepares
its training shards, each story is stripped and encoded with a leading BOS and no EOS, the stories are
concatenated, and the stream is cut into windows of seq_len + 1 tokens that start seq_len apart: inputs are a
window's first seq_len tokens, targets its last seq_len (every token but the stream's first is a target once).
"""
from __future__ import annotations

import os

import numpy as np

from resnet_ensembles.data.tokenizer import Tokenizer

END_OF_STORY = "<|endoftext|>"


def stories(path: str) -> list[str]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"evaluation text {path} does not exist")
  text = open(path, encoding="utf-8").read()
  out = [s.strip() for s in text.split(END_OF_STORY)]
  return [s for s in out if s]


def token_stream(path: str, tokenizer: Tokenizer) -> np.ndarray:
  """Every story of the file encoded with a leading BOS, concatenated: int32 [N]."""
  return np.concatenate([np.asarray(tokenizer.encode(s), np.int32) for s in stories(path)])


def windows(stream: np.ndarray, seq_len: int, count: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) [W, seq_len] of the stream's whole windows; `count` > 0 keeps that many, evenly spaced."""
  total = (len(stream) - 1) // seq_len
  if total < 1:
    raise ValueError(f"the text holds {len(stream)} tokens, fewer than one window of {seq_len} + 1")
  starts = np.arange(total) * seq_len
  if count:
    if count > total:
      raise ValueError(f"asked for {count} windows of {seq_len} tokens; the text holds {total}")
    starts = starts[np.linspace(0, total - 1, count).round().astype(int)]
  chunks = np.stack([stream[s:s + seq_len + 1] for s in starts])
  return chunks[:, :-1], chunks[:, 1:]
