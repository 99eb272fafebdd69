"""Sampling from a `Llama` with a key/value cache: each new token costs one position, not a whole prefix.

`generate` runs the prompt and the new tokens through `Llama.decode` inside one `lax.scan` (one compiled
program): while the prompt lasts its next token is forced, then the next token is the argmax (temperature
0) or a draw from softmax(logits / temperature). `generate_uncached` recomputes the whole prefix per token
(quadratic; for checking the cache and for speed comparisons).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("model", "steps", "temperature"))
def _scan(model, variables, prompt, steps: int, temperature: float, key):
  batch = prompt.shape[0]

  def step(carry, pos):
    token, cache, key = carry
    logits, cache = model.apply(variables, token, pos, cache, method=model.decode)
    key, sub = jax.random.split(key)
    chosen = (jnp.argmax(logits, -1) if temperature == 0
              else jax.random.categorical(sub, logits / temperature, axis=-1)).astype(jnp.int32)
    forced = pos + 1 < prompt.shape[1]
    nxt = jnp.where(forced, prompt[:, jnp.minimum(pos + 1, prompt.shape[1] - 1)], chosen)
    return (nxt, cache, key), nxt

  init = (prompt[:, 0], model.empty_cache(batch), key)
  _, out = jax.lax.scan(step, init, jnp.arange(steps))
  return out.T


def check_prompt(model, prompt, steps: int) -> np.ndarray:
  prompt = np.asarray(prompt, np.int32)
  prompt = prompt[None] if prompt.ndim == 1 else prompt
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f"a prompt is [batch, length >= 1] token ids (BOS first), got shape {prompt.shape}")
  if steps < prompt.shape[1] or steps > model.seq_len:
    raise ValueError(f"steps must lie in {prompt.shape[1]}..{model.seq_len} (the prompt to the context), got {steps}")
  model.check_tokens(prompt)
  return prompt


def generate(model, variables, prompt, steps: int, temperature: float = 0.0, seed: int = 0) -> np.ndarray:
  """Token ids [batch, steps]: the token after each of positions 0..steps-1 (the prompt's own tokens where it
  still runs), as llama2.c's `run` prints them for `-n steps`; prompt [length] or [batch, length] with BOS first."""
  prompt = check_prompt(model, prompt, steps)
  return np.asarray(_scan(model, variables, jnp.asarray(prompt), steps, float(temperature), jax.random.key(seed)))


def generate_uncached(model, variables, prompt, steps: int) -> np.ndarray:
  """Greedy tokens as `generate`, recomputing the whole prefix at every step (one fixed-length program)."""
  prompt = check_prompt(model, prompt, steps)
  seq = np.zeros((prompt.shape[0], steps + 1), np.int32)
  seq[:, :prompt.shape[1]] = prompt
  fn = jax.jit(lambda v, s: model.apply(v, s))
  for pos in range(steps):
    chosen = np.argmax(np.asarray(fn(variables, jnp.asarray(seq[:, :steps]))[:, pos]), -1)
    if pos + 1 >= prompt.shape[1]:
      seq[:, pos + 1] = chosen
  return seq[:, 1:]
