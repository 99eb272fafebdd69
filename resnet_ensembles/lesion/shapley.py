"""What the lesion lattice says about the branches: Shapley values, interactions, additivity, pruning.

The game: a coalition T of the k lattice branches is the network keeping T (the others deleted); its worth
is the loss it removes, v(T) = L(none kept) - L(T), in nats (or points of error with the error table). A
branch's Shapley value is its average marginal worth over every order of adding the branches; they sum to
v(all) = L(none) - L(full) (efficiency). Pairwise Shapley interaction indices (Grabisch 1997) say how much
two branches together are worth beyond their separate worths. The additive share: on the uniform
distribution over the 2^k lesions, the variance of v splits over the Walsh-Fourier orders; order 1 is the
best additive model of single-branch effects, orders 1-2 add pairwise terms. Arrays are indexed by the mask
integer of `lattice.mask_table` (bit j set: branch j kept).
"""
from __future__ import annotations

from math import factorial
from typing import Callable, Optional, Sequence

import numpy as np


def _k(table: np.ndarray) -> int:
  k = int(round(np.log2(len(table))))
  if 2 ** k != len(table):
    raise ValueError(f"a lattice table has 2^k entries, got {len(table)}")
  return k


def popcount(k: int) -> np.ndarray:
  return ((np.arange(2 ** k)[:, None] >> np.arange(k)[None]) & 1).sum(1)


def worth(loss: np.ndarray) -> np.ndarray:
  """v(T) = L(nothing kept) - L(T): the loss the kept branches remove."""
  loss = np.asarray(loss, np.float64)
  return loss[0] - loss


def exact_shapley(v: np.ndarray) -> np.ndarray:
  """[k] Shapley values of the game v [2^k] (v[0] the empty coalition)."""
  k = _k(v)
  size = popcount(k)
  w = np.array([factorial(s) * factorial(k - s - 1) / factorial(k) for s in range(k)])
  idx = np.arange(2 ** k)
  out = np.zeros(k)
  for j in range(k):
    t = idx[(idx >> j) & 1 == 0]
    out[j] = np.sum(w[size[t]] * (v[t | (1 << j)] - v[t]))
  return out


def interactions(v: np.ndarray) -> np.ndarray:
  """[k, k] Shapley interaction indices I_ij (diagonal: the Shapley values)."""
  k = _k(v)
  size, idx = popcount(k), np.arange(2 ** k)
  w = np.array([factorial(s) * factorial(k - s - 2) / factorial(k - 1) for s in range(max(k - 1, 1))])
  out = np.diag(exact_shapley(v))
  for i in range(k):
    for j in range(i + 1, k):
      t = idx[((idx >> i) & 1 == 0) & ((idx >> j) & 1 == 0)]
      d = v[t | (1 << i) | (1 << j)] - v[t | (1 << i)] - v[t | (1 << j)] + v[t]
      out[i, j] = out[j, i] = np.sum(w[size[t]] * d)
  return out


def walsh_shares(v: np.ndarray) -> np.ndarray:
  """[k + 1] share of v's variance over the 2^k lesions in each Walsh-Fourier order (order 0: 0)."""
  k = _k(v)
  f = np.asarray(v, np.float64).copy()
  h = 1
  while h < len(f):  # fast Walsh-Hadamard transform
    f = f.reshape(-1, 2, h)
    f = np.concatenate([f[:, 0] + f[:, 1], f[:, 0] - f[:, 1]], axis=1).reshape(-1)
    h *= 2
  power = np.bincount(popcount(k), weights=f ** 2, minlength=k + 1)
  power[0] = 0.0
  total = power.sum()
  return power / total if total > 0 else power


def additivity(v: np.ndarray) -> dict:
  """R^2 of the additive model (order 1) and with pairwise terms (orders 1-2) over the whole lattice."""
  s = walsh_shares(v)
  return {"first_order": float(s[1]), "up_to_pairwise": float(s[1] + (s[2] if len(s) > 2 else 0.0))}


def sampled_shapley(value: Callable[[np.ndarray], np.ndarray], k: int, num_permutations: int,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(mean, standard error) [k] of permutation-sampled Shapley values. `value(masks [M, k] 0/1) -> [M]` is
  the worth of each coalition; each permutation costs k + 1 coalitions (the empty one to all)."""
  if num_permutations < 2:
    raise ValueError(f"num_permutations must be >= 2 for a standard error, got {num_permutations}")
  rng = np.random.default_rng(seed)
  perms = np.stack([rng.permutation(k) for _ in range(num_permutations)])
  masks = np.zeros((num_permutations, k + 1, k), np.float32)
  for p, perm in enumerate(perms):
    for step, j in enumerate(perm):
      masks[p, step + 1:, j] = 1
  vals = np.asarray(value(masks.reshape(-1, k)), np.float64).reshape(num_permutations, k + 1)
  marginal = np.zeros((num_permutations, k))
  np.put_along_axis(marginal, perms, np.diff(vals, axis=1), axis=1)
  return marginal.mean(0), marginal.std(0, ddof=1) / np.sqrt(num_permutations)


def oracle_curve(loss: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
  """Lowest loss with d branches deleted, d = 0..k, and which branches."""
  k = _k(loss)
  deleted = k - popcount(k)
  best = [int(np.flatnonzero(deleted == d)[np.argmin(loss[deleted == d])]) for d in range(k + 1)]
  return np.asarray(loss)[best], [[j for j in range(k) if not (m >> j) & 1] for m in best]


def greedy_curve(loss: np.ndarray) -> tuple[np.ndarray, list[int]]:
  """Delete, one at a time, the branch whose deletion leaves the lowest loss; (curve, deletion order)."""
  k = _k(loss)
  m, order, curve = 2 ** k - 1, [], [loss[2 ** k - 1]]
  for _ in range(k):
    j = min((j for j in range(k) if (m >> j) & 1), key=lambda j: loss[m & ~(1 << j)])
    m &= ~(1 << j)
    order.append(j)
    curve.append(loss[m])
  return np.asarray(curve), order


def ranked_curve(loss: np.ndarray, order: Sequence[int]) -> np.ndarray:
  """Loss after deleting the first d branches of `order`, d = 0..k (a score's pruning choice)."""
  k = _k(loss)
  m, curve = 2 ** k - 1, [loss[2 ** k - 1]]
  for j in order:
    m &= ~(1 << int(j))
    curve.append(loss[m])
  return np.asarray(curve)


def least_important_first(score: np.ndarray, higher_is_important: bool = True) -> np.ndarray:
  """Deletion order of a per-branch score: least important first (ties by position)."""
  s = np.asarray(score, np.float64)
  return np.argsort(s if higher_is_important else -s, kind="stable")


def contiguous_span_order(span_distance: np.ndarray, k: int, d: int) -> Optional[list[int]]:
  """Gromov et al.'s choice for d deletions: the run of d consecutive branches with the least angular
  distance between the streams around it (`span_distance[l, d]`, NaN where undefined)."""
  if d == 0:
    return []
  row = np.asarray(span_distance)[:k - d + 1, d]
  if np.all(np.isnan(row)):
    return None
  start = int(np.nanargmin(row))
  return list(range(start, start + d))
