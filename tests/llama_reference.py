"""An independent float64 numpy forward of a llama2.c checkpoint, for tests only: it reads the arrays in the
file's own layout ([out, in] matrices, stacked per kind) and follows the block as llama2.c's README states it,
one position and one head at a time, without sharing any code with `models.llama`."""
import numpy as np


def _rmsnorm(x, w):
  return w * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5)


def log_probs(header, arrays, tokens):
  """log softmax of the next-token logits [T, vocab] of one sequence of token ids [T], in float64."""
  a = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
  T, d, hs = len(tokens), header.dim, header.dim // header.n_heads
  group = header.n_heads // header.n_kv_heads
  x = a["embedding"][np.asarray(tokens)]
  angle = np.arange(T)[:, None] * 10000.0 ** (-np.arange(0, hs, 2) / hs)[None, :]  # [T, hs/2]

  def rope(v):  # v [T, heads, hs]: pairs (2i, 2i+1)
    out = v.copy()
    c, s = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    out[..., 0::2] = v[..., 0::2] * c - v[..., 1::2] * s
    out[..., 1::2] = v[..., 0::2] * s + v[..., 1::2] * c
    return out

  for l in range(header.n_layers):
    h = _rmsnorm(x, a["attention_norm"][l])
    q = rope((h @ a["wq"][l].T).reshape(T, header.n_heads, hs))
    k = rope((h @ a["wk"][l].T).reshape(T, header.n_kv_heads, hs))
    v = (h @ a["wv"][l].T).reshape(T, header.n_kv_heads, hs)
    att = np.zeros((T, header.n_heads, hs))
    for t in range(T):
      for head in range(header.n_heads):
        kv = head // group
        score = k[:t + 1, kv] @ q[t, head] / np.sqrt(hs)
        w = np.exp(score - score.max())
        att[t, head] = (w / w.sum()) @ v[:t + 1, kv]
    x = x + att.reshape(T, d) @ a["wo"][l].T
    h = _rmsnorm(x, a["ffn_norm"][l])
    gate = h @ a["w1"][l].T
    x = x + ((gate / (1 + np.exp(-gate))) * (h @ a["w3"][l].T)) @ a["w2"][l].T
  logits = _rmsnorm(x, a["norm"]) @ a["classifier"].T
  logits = logits - logits.max(-1, keepdims=True)
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))
