"""Terminal logging: our progress lines at INFO, third-party chatter (orbax, absl internals) hidden."""
from absl import logging

_QUIET = ("orbax", "etils", "tensorflow", "jax/_src")


def setup_logging() -> None:
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(lambda r: not any(q in r.pathname for q in _QUIET))
