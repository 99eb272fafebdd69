"""Terminal logging: our progress lines at INFO, third-party chatter (orbax, absl internals) hidden."""
from absl import logging

_QUIET = ("orbax", "etils", "tensorflow", "jax/_src")


def duration(seconds: float) -> str:
  """H:MM:SS for progress lines, with days once it passes 24 h ("3d 11:37:16"): a long CPU run's ETA
  must not wrap around midnight."""
  s = int(max(seconds, 0.0) + 0.5)
  days, s = divmod(s, 86400)
  clock = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
  return f"{days}d {clock}" if days else clock


def setup_logging() -> None:
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(lambda r: not any(q in r.pathname for q in _QUIET))


def one_line_errors(main):
  """Wraps an absl main: bad input (config, data, files) ends with one line, not a traceback."""
  import functools
  import sys

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError, FloatingPointError, ImportError, RuntimeError) as e:
      sys.exit(f"error: {type(e).__name__}: {e}")
  return wrapped


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing for `app.run(main, flags_parser=parse_flags)`: a bad flag, or a config file whose
  get_config raises (ml_collections then quotes the whole traceback), ends with one line."""
  import sys
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    sys.exit("error: " + (f"{lines[0]} {lines[-1]}" if len(lines) > 1 else (lines or [repr(e)])[0]))
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # e.g. --config.<a field the config lacks>
    text = str(e).replace("\\n", " ").replace("\\'", "'").replace("\n", " ").strip("'\" ")
    sys.exit(f"error: bad flag ({type(e).__name__}): {text}")
