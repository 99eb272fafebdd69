"""llama2.c checkpoints read without torch: the legacy format and the versioned ones, as a `models.Llama`.

Formats (all little-endian; every matrix stored [out_features, in_features], i.e. y = W x):
  legacy (v0)   7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
                vocab_size means the classifier is stored apart from the embedding), then float32: embedding,
                per-kind stacks over layers (attention norm, wq, wk, wv, wo, MLP norm, w1, w2, w3), final norm,
                two unused rotary tables of seq_len * head_size / 2 each, the classifier if unshared.
  version 1     a 256-byte header: uint32 magic "ak42" (0x616b3432), int32 version, the 7 int32, a uint8
                shared-classifier flag, zeros; then float32: the norms (attention, MLP, final), embedding,
                wq, wk, wv, wo, w1, w2, w3, the classifier if unshared.
  version 2     the version-1 header plus an int32 quantisation group size; float32 norms, then every matrix
                as int8 (embedding, wq .. w3, classifier if unshared), then each matrix's float32 group scales
                (Q8_0: value = int8 * scale of its group of `group_size` consecutive entries).
A file whose size disagrees with its header is refused with one line before anything is built.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from resnet_ensembles.models.llama import Llama

MAGIC = 0x616B3432
HEADER_BYTES = 256
_MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


@dataclasses.dataclass(frozen=True)
class Header:
  dim: int
  hidden_dim: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  vocab_size: int
  seq_len: int
  shared_classifier: bool
  version: int = 0
  group_size: int = 0

  @property
  def kv_dim(self) -> int:
    return self.dim * self.n_kv_heads // self.n_heads

  def shapes(self) -> dict[str, tuple[int, ...]]:
    """Every stored array's shape [out, in] (stacked over layers where per layer)."""
    L, d, h, kv = self.n_layers, self.dim, self.hidden_dim, self.kv_dim
    return {"embedding": (self.vocab_size, d), "attention_norm": (L, d), "wq": (L, d, d), "wk": (L, kv, d),
            "wv": (L, kv, d), "wo": (L, d, d), "ffn_norm": (L, d), "w1": (L, h, d), "w2": (L, d, h),
            "w3": (L, h, d), "norm": (d,), "classifier": (self.vocab_size, d)}


def _fail(path: str, why: str) -> None:
  raise ValueError(f"{path}: not a llama2.c checkpoint this reader accepts: {why}")


def read_header(path: str) -> tuple[Header, int]:
  """(header, byte offset of the first weight); one-line ValueError for a short, foreign or inconsistent file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"llama2.c checkpoint {path} does not exist")
  with open(path, "rb") as f:
    head = f.read(HEADER_BYTES)
  if len(head) < 28:
    _fail(path, f"{len(head)} bytes, shorter than the 28-byte legacy header")
  magic, version = np.frombuffer(head[:8], "<u4")
  if magic == MAGIC:
    if len(head) < HEADER_BYTES:
      _fail(path, f"versioned header cut short at {len(head)} of {HEADER_BYTES} bytes")
    if version not in (1, 2):
      _fail(path, f"format version {int(version)} (this reader knows versions 1 and 2 and the legacy format)")
    ints = np.frombuffer(head[8:36], "<i4").tolist()
    shared = bool(head[36])
    group = int(np.frombuffer(head[37:41], "<i4")[0]) if version == 2 else 0
    header, offset = Header(*ints, shared, int(version), group), HEADER_BYTES
  else:
    ints = np.frombuffer(head[:28], "<i4").tolist()
    header, offset = Header(*ints[:5], abs(ints[5]), ints[6], ints[5] > 0), 28
  _check_header(path, header)
  expected = offset + _payload_bytes(header)
  size = os.path.getsize(path)
  if size != expected:
    _fail(path, f"its header ({_describe(header)}) needs {expected:,} bytes but the file has {size:,}")
  return header, offset


def _describe(h: Header) -> str:
  return (f"dim {h.dim}, hidden {h.hidden_dim}, {h.n_layers} layers, {h.n_heads} heads, {h.n_kv_heads} kv heads, "
          f"vocab {h.vocab_size}, context {h.seq_len}" + (f", format version {h.version}" if h.version else ""))


def _check_header(path: str, h: Header) -> None:
  values = dataclasses.asdict(h)
  for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"):
    if not 0 < values[name] < 1 << 24:
      _fail(path, f"header field {name} = {values[name]} is not a plausible size")
  if h.dim % h.n_heads or h.n_heads % h.n_kv_heads or (h.dim // h.n_heads) % 2:
    _fail(path, f"header {_describe(h)}: heads must divide dim with an even head size, kv heads divide heads")
  if h.version == 2 and (h.group_size <= 0 or h.dim % h.group_size):
    _fail(path, f"Q8_0 group size {h.group_size} does not divide dim {h.dim}")


def _payload_bytes(h: Header) -> int:
  shapes = h.shapes()
  norms = 2 * h.n_layers * h.dim + h.dim
  mats = [shapes["embedding"]] + [shapes[m] for m in _MATRICES] + ([] if h.shared_classifier else [shapes["classifier"]])
  entries = sum(int(np.prod(s)) for s in mats)
  if h.version == 0:
    return 4 * (norms + entries + h.seq_len * (h.dim // h.n_heads))
  if h.version == 1:
    return 4 * (norms + entries)
  return 4 * norms + entries + 4 * (entries // h.group_size)


def read_arrays(path: str) -> tuple[Header, dict[str, np.ndarray]]:
  """The header and every weight as float32 numpy arrays named as in `Header.shapes` ([out, in])."""
  header, offset = read_header(path)
  raw = np.fromfile(path, np.uint8, offset=offset)
  shapes, pos, out = header.shapes(), 0, {}

  def take(name, dtype="<f4"):
    nonlocal pos
    count = int(np.prod(shapes[name]))
    size = np.dtype(dtype).itemsize * count
    out[name] = np.frombuffer(raw[pos:pos + size].tobytes(), dtype).reshape(shapes[name])
    pos += size

  mats = ["embedding", *_MATRICES] + ([] if header.shared_classifier else ["classifier"])
  if header.version == 0:
    for name in ("embedding", "attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3", "norm"):
      take(name)
    pos += 4 * header.seq_len * (header.dim // header.n_heads)  # the unused rotary tables
    if not header.shared_classifier:
      take("classifier")
  else:
    for name in ("attention_norm", "ffn_norm", "norm"):
      take(name)
    for name in mats:
      take(name, "<f4" if header.version == 1 else "i1")
    if header.version == 2:
      for name in mats:
        count = out[name].size // header.group_size
        scales = np.frombuffer(raw[pos:pos + 4 * count].tobytes(), "<f4")
        pos += 4 * count
        q = out[name].astype(np.float32).reshape(-1, header.group_size)
        out[name] = (q * scales[:, None]).reshape(shapes[name])
  if header.shared_classifier:
    out["classifier"] = out["embedding"]
  return header, {k: np.asarray(v, np.float32) for k, v in out.items()}


def model_of(header: Header, dtype=np.float32) -> Llama:
  """The `Llama` a checkpoint's header describes."""
  return Llama(dim=header.dim, hidden_dim=header.hidden_dim, n_layers=header.n_layers, n_heads=header.n_heads,
               n_kv_heads=header.n_kv_heads, vocab_size=header.vocab_size, seq_len=header.seq_len,
               shared_classifier=header.shared_classifier, dtype=dtype)


def to_variables(header: Header, arrays: dict[str, np.ndarray]) -> dict:
  """llama2.c arrays as `Llama` variables: Dense kernels [in, out]; block 2l = layer l's attention, 2l+1 its MLP."""
  p = {"embed": {"embedding": arrays["embedding"]}, "norm": {"scale": arrays["norm"]}}
  kernel = lambda name, layer: {"kernel": np.ascontiguousarray(arrays[name][layer].T)}
  for layer in range(header.n_layers):
    p[f"block_{2 * layer:02d}"] = {"norm": {"scale": arrays["attention_norm"][layer]},
                                   **{m: kernel(m, layer) for m in ("wq", "wk", "wv", "wo")}}
    p[f"block_{2 * layer + 1:02d}"] = {"norm": {"scale": arrays["ffn_norm"][layer]},
                                       **{m: kernel(m, layer) for m in ("w1", "w2", "w3")}}
  if not header.shared_classifier:
    p["output"] = {"kernel": np.ascontiguousarray(arrays["classifier"].T)}
  return {"params": p}


def load(path: str) -> tuple[Llama, dict, Header]:
  """(model, variables, header) of a llama2.c checkpoint."""
  header, arrays = read_arrays(path)
  return model_of(header), to_variables(header, arrays), header
