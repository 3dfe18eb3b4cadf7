"""The errors a run stops with on purpose: each message names what to fix."""


class ConfigError(ValueError):
    """A setting that cannot run, found before any compute; the message names the key and what it allows."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the message names the step and the routing statistics."""


class NoResultError(RuntimeError):
    """A run trained and validated, but its selection metric is not a number: it has no result to report."""
