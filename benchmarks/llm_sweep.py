r"""Scoring throughput of the language model's lesion sweep: the vmapped sweep (`lesion.tasks.evaluate`, many
masks per compiled program) against a loop over masks (one network per call), in one run, as a ratio.

  python -m benchmarks.llm_sweep --masks=32 --windows=2

Counts next-token positions scored per second (tokens x masks / s) and GFLOP/s from the Llama's multiply-adds
(`Layout.block_macs` per window: projections, causal attention, SwiGLU; plus the classifier), as a share of an
fp32 peak given by --peak_gflops (default: 2 AVX2 cores x 2.45 GHz x 2 FMA units x 8 lanes x 2 FLOP).
Each variant is compiled and run once before it is timed; the best of --repeats timings is kept.
"""
import time

from absl import app, flags
import numpy as np

from resnet_ensembles.data import text as text_lib
from resnet_ensembles.data import tokenizer as tok_lib
from resnet_ensembles.lesion import tasks
from resnet_ensembles.store import llama2c

STORIES = "../shared/data/pretrained/llama2c-stories260K"
_CKPT = flags.DEFINE_string("checkpoint", f"{STORIES}/stories260K.bin", "llama2.c checkpoint")
_TOK = flags.DEFINE_string("tokenizer", f"{STORIES}/tok512.bin", "llama2.c tokenizer")
_TEXT = flags.DEFINE_string("text", f"{STORIES}/tinystories/valid_first1000.txt", "evaluation text")
_MASKS = flags.DEFINE_integer("masks", 32, "random masks scored")
_WINDOWS = flags.DEFINE_integer("windows", 2, "evaluation windows (of the model's context)")
_CHUNK = flags.DEFINE_integer("chunk", 16, "masks per program in the vmapped sweep")
_REPEATS = flags.DEFINE_integer("repeats", 2, "timings per variant (the best is kept)")
_PEAK = flags.DEFINE_float("peak_gflops", 156.8, "fp32 peak, GFLOP/s")


def main(argv):
  del argv
  model, variables, header = llama2c.load(_CKPT.value)
  tok = tok_lib.load(_TOK.value, header.vocab_size)
  x, y = text_lib.windows(text_lib.token_stream(_TEXT.value, tok), header.seq_len, _WINDOWS.value)
  task = tasks.TokenTask(x, y, batch_size=_WINDOWS.value)
  masks = (np.random.default_rng(0).random((_MASKS.value, model.layout.num_blocks)) > 0.3).astype(np.float32)
  flops_per_token = 2 * (sum(model.layout.block_macs) / header.seq_len + header.dim * header.vocab_size)
  scored = _MASKS.value * x.size
  results = {}
  for name, chunk in (("loop over masks", 1), ("vmapped sweep", _CHUNK.value)):
    tasks.evaluate(model, variables, task, masks[:chunk], networks_per_chunk=chunk)  # compile
    best = min(_timed(lambda: tasks.evaluate(model, variables, task, masks, networks_per_chunk=chunk))
               for _ in range(_REPEATS.value))
    results[name] = best
    rate = scored / best
    print(f"{name:<16} {best:8.2f} s  {rate:10.0f} tokens/s  {rate * flops_per_token / 1e9:6.2f} GFLOP/s  "
          f"{100 * rate * flops_per_token / 1e9 / _PEAK.value:5.2f}% of {_PEAK.value:.0f} GFLOP/s")
  print(f"vmapped / loop: x{results['loop over masks'] / results['vmapped sweep']:.2f} "
        f"({_MASKS.value} masks x {x.size} tokens, chunk {_CHUNK.value})")


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


if __name__ == "__main__":
  app.run(main)
