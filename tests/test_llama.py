"""The Llama family and its llama2.c readers, checked against what the model's author published and against an
independent float64 numpy forward; damaged and foreign files fail with one line."""
import json
import os
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from llama_reference import log_probs  # noqa: E402

from resnet_ensembles.data import text as text_lib  # noqa: E402
from resnet_ensembles.data import tokenizer as tok_lib  # noqa: E402
from resnet_ensembles.models import llama_decode  # noqa: E402
from resnet_ensembles.store import llama2c  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STORIES = os.environ.get("LLAMA2C_DIR") or os.path.join(os.path.dirname(ROOT), "shared", "data", "pretrained",
                                                          "llama2c-stories260K")
PUBLISHED = os.path.join(ROOT, "resnet_ensembles", "store", "llama2c_published.json")


@pytest.fixture(scope="module")
def stories():
  ckpt = os.path.join(STORIES, "stories260K.bin")
  if not os.path.isfile(ckpt):
    pytest.skip(f"stories260K not found at {STORIES} (set LLAMA2C_DIR)")
  header, arrays = llama2c.read_arrays(ckpt)
  tok = tok_lib.load(os.path.join(STORIES, "tok512.bin"), header.vocab_size)
  return header, arrays, llama2c.model_of(header), llama2c.to_variables(header, arrays), tok


def write_checkpoint(path, header, arrays, version=0, group=16):
  """A llama2.c file of any version from arrays named as `Header.shapes` (a test-only writer)."""
  h = header
  ints = [h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len]
  mats = ["embedding", "wq", "wk", "wv", "wo", "w1", "w2", "w3"] + ([] if h.shared_classifier else ["classifier"])
  f32 = lambda name: np.asarray(arrays[name], "<f4").tobytes()
  with open(path, "wb") as f:
    if version == 0:
      ints[5] = h.vocab_size if h.shared_classifier else -h.vocab_size
      f.write(struct.pack("<7i", *ints))
      for name in ("embedding", "attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3", "norm"):
        f.write(f32(name))
      f.write(np.zeros(h.seq_len * (h.dim // h.n_heads), "<f4").tobytes())
      if not h.shared_classifier:
        f.write(f32("classifier"))
      return
    head = struct.pack("<Ii7iB", llama2c.MAGIC, version, *ints, int(h.shared_classifier))
    head += struct.pack("<i", group) if version == 2 else b""
    f.write(head + b"\0" * (256 - len(head)))
    for name in ("attention_norm", "ffn_norm", "norm"):
      f.write(f32(name))
    if version == 1:
      for name in mats:
        f.write(f32(name))
      return
    scales = []
    for name in mats:
      w = np.asarray(arrays[name], np.float32).reshape(-1, group)
      s = np.abs(w).max(1) / 127.0
      f.write(np.round(w / s[:, None]).astype(np.int8).tobytes())
      scales.append(s.astype("<f4").tobytes())
    f.write(b"".join(scales))


def tiny(shared=False, seed=0):
  """A random 2-layer GQA Llama with an unshared classifier: header and arrays."""
  h = llama2c.Header(dim=16, hidden_dim=24, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32, seq_len=12,
                     shared_classifier=shared)
  rng = np.random.default_rng(seed)
  arrays = {k: rng.normal(size=s).astype(np.float32) * (1.0 if "norm" in k else 0.3) for k, s in h.shapes().items()}
  if shared:
    arrays["classifier"] = arrays["embedding"]
  return h, arrays


def test_greedy_sample_equals_the_published_one_token_for_token(stories):
  header, _, model, variables, tok = stories
  published = json.load(open(PUBLISHED))
  out = llama_decode.generate(model, variables, [tok_lib.BOS], published["greedy_steps"])[0]
  assert out.tolist() == tok.encode(published["greedy_text"], bos=False)
  assert tok.decode(out, previous=tok_lib.BOS) == published["greedy_text"]


def test_kv_cache_equals_recomputing_the_prefix(stories):
  _, _, model, variables, tok = stories
  prompt = [tok.encode("The cat sat on the mat.")] * 2
  cached = llama_decode.generate(model, variables, prompt, 24)
  np.testing.assert_array_equal(cached, llama_decode.generate_uncached(model, variables, prompt, 24))
  sampled = llama_decode.generate(model, variables, prompt, 24, temperature=1.0, seed=3)
  assert sampled[:, :len(prompt[0]) - 1].tolist() == [p[1:] for p in prompt]


def test_log_probs_equal_a_float64_numpy_forward(stories):
  header, arrays, model, variables, tok = stories
  stream = text_lib.token_stream(os.path.join(STORIES, "tinystories", "valid_first1000.txt"), tok)
  x, _ = text_lib.windows(stream, header.seq_len, 3)
  x = x[:, :96]
  ours = np.asarray(jax.jit(lambda v, x: jax.nn.log_softmax(model.apply(v, x)))(variables, x))  # one program
  for i in range(len(x)):
    np.testing.assert_allclose(ours[i], log_probs(header, arrays, x[i]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_every_format_version_reads_an_unshared_gqa_model(tmp_path, version):
  header, arrays = tiny()
  path = str(tmp_path / f"v{version}.bin")
  write_checkpoint(path, header, arrays, version)
  read, got = llama2c.read_arrays(path)
  assert (read.dim, read.n_kv_heads, read.vocab_size, read.shared_classifier, read.version) == (16, 2, 32, False,
                                                                                                 version)
  for name, want in arrays.items():
    np.testing.assert_allclose(got[name], want, atol=0 if version < 2 else np.abs(want).max() / 127, err_msg=name)
  model, variables = llama2c.model_of(read), llama2c.to_variables(read, got)
  tokens = np.random.default_rng(1).integers(0, 32, size=(2, 12))
  ours = np.asarray(jax.jit(lambda v, x: jax.nn.log_softmax(model.apply(v, x)))(variables, tokens))
  for i in range(2):
    np.testing.assert_allclose(ours[i], log_probs(read, got, tokens[i]), atol=1e-4, rtol=0)


def test_damaged_and_foreign_checkpoints_fail_with_one_line(tmp_path):
  header, arrays = tiny(shared=True)
  good = str(tmp_path / "good.bin")
  write_checkpoint(good, header, arrays)
  data = open(good, "rb").read()
  cases = {"short.bin": (data[:-4], "needs"), "long.bin": (data + b"\0" * 8, "needs"),
           "stub.bin": (data[:10], "shorter than"), "png.bin": (b"\x89PNG\r\n\x1a\n" + b"\0" * 400, "plausible"),
           "v9.bin": (struct.pack("<Ii", llama2c.MAGIC, 9) + b"\0" * 300, "version 9"),
           "heads.bin": (struct.pack("<7i", 16, 24, 2, 3, 2, 32, 12) + data[28:], "heads")}
  for name, (content, words) in cases.items():
    path = str(tmp_path / name)
    open(path, "wb").write(content)
    with pytest.raises(ValueError) as err:
      llama2c.load(path)
    assert words in str(err.value) and "\n" not in str(err.value) and name in str(err.value), (name, err.value)
  with pytest.raises(FileNotFoundError):
    llama2c.load(str(tmp_path / "absent.bin"))


def test_tokenizer_round_trip_and_heap_merges_equal_the_plain_rescan(stories):
  _, _, _, _, tok = stories
  story = text_lib.stories(os.path.join(STORIES, "tinystories", "valid_first1000.txt"))[5]
  for text in (story, "Ünïcödé 🙂 and\ttabs", "a"):
    ids = tok.encode(text)
    assert ids[0] == tok_lib.BOS and tok.decode(ids) == text and tok.decode(ids[1:]) == " " + text
    # the quadratic rescan that the heap replaces: merge the best-scoring adjacent pair, leftmost on ties
    plain = [tok.ids[c.encode()] if c.encode() in tok.ids else None for c in " " + text]
    plain = [t for c, t in zip(" " + text, plain) for t in ([t] if t is not None else [b + 3 for b in c.encode()])]
    while True:
      best = max(((tok.scores[tok.ids[m]], -i) for i in range(len(plain) - 1)
                  if (m := tok.pieces[plain[i]] + tok.pieces[plain[i + 1]]) in tok.ids), default=None)
      if best is None:
        break
      i = -best[1]
      plain[i:i + 2] = [tok.ids[tok.pieces[plain[i]] + tok.pieces[plain[i + 1]]]]
    assert ids[1:] == plain
  assert tok.encode("", bos=True, eos=True) == [tok_lib.BOS, tok_lib.EOS]


def test_damaged_tokenizer_files_fail_with_one_line(tmp_path, stories):
  data = open(os.path.join(STORIES, "tok512.bin"), "rb").read()
  for name, content, vocab, words in (("cut.bin", data[:-3], 512, "ends"), ("more.bin", data, 500, "follow"),
                                      ("zero.bin", b"\0" * 64, 512, "max_token_length")):
    path = str(tmp_path / name)
    open(path, "wb").write(content)
    with pytest.raises(ValueError, match=words) as err:
      tok_lib.load(path, vocab)
    assert "\n" not in str(err.value)


def test_bad_tokens_and_contexts_fail_with_one_line():
  header, arrays = tiny()
  model, variables = llama2c.model_of(header), llama2c.to_variables(header, arrays)
  with pytest.raises(ValueError, match=r"0\.\.31"):
    model.apply(variables, jnp.asarray([[1, 40]]))
  with pytest.raises(ValueError, match="context"):
    model.apply(variables, jnp.zeros((1, 13), jnp.int32))
  with pytest.raises(ValueError, match="steps"):
    llama_decode.generate(model, variables, [1], 13)


def test_masks_orders_and_parallel_reads_act_on_sublayers_and_layers():
  header, arrays = tiny()
  model, variables = llama2c.model_of(header), llama2c.to_variables(header, arrays)
  x = jnp.asarray(np.random.default_rng(2).integers(0, 32, size=(2, 12)))
  full = model.apply(variables, x)
  np.testing.assert_allclose(model.apply(variables, x, block_mask=jnp.ones(4), block_order=jnp.arange(4),
                                         parallel_from=jnp.arange(2)), full, atol=1e-6)
  # deleting layer 0's MLP equals a network whose w2 is zero
  zeroed = jax.tree.map(lambda a: a, variables)
  zeroed["params"]["block_01"]["w2"]["kernel"] = np.zeros_like(arrays["w2"][0].T)
  np.testing.assert_allclose(model.apply(variables, x, block_mask=jnp.asarray([1., 0, 1, 1])),
                             model.apply(zeroed, x), atol=1e-6)
  # swapping the two layers equals a checkpoint with the layers stored the other way round
  swapped = {k: (v[::-1] if v.ndim >= 2 and v.shape[0] == 2 and k not in ("embedding", "classifier") else v)
             for k, v in arrays.items()}
  np.testing.assert_allclose(model.apply(variables, x, block_order=jnp.asarray([2, 3, 0, 1])),
                             model.apply(llama2c.to_variables(header, swapped), x), atol=1e-5)
  # both layers reading the embedded tokens: the output is the embedding plus both layers' changes
  h0 = model.apply(variables, x, method=model.embed)
  layer = lambda l: model.apply(variables, model.apply(variables, h0, 2 * l, method=model.block), 2 * l + 1,
                                method=model.block) - h0
  want = model.apply(variables, h0 + layer(0) + layer(1), method=model.readout)
  np.testing.assert_allclose(model.apply(variables, x, parallel_from=jnp.asarray([0, 0])), want, atol=1e-5)
