"""Errors a user can cause. The CLI prints their message as one line and exits 2.

Every message names the file, field or node concerned and what was expected.
"""


class EdgepackError(Exception):
    """Base class for input and usage errors (exit code 2)."""


class ConfigError(EdgepackError):
    """A config file or CLI option is malformed or names something that does not exist."""


class ModelError(EdgepackError):
    """A model file is missing, corrupt, or has a form edgepack cannot use."""


class DataError(EdgepackError):
    """Calibration or evaluation data is missing or does not fit the model."""


class UnsupportedOperatorError(ModelError):
    """A graph contains an operator an artifact writer cannot express faithfully."""


class BundleError(EdgepackError):
    """A release bundle is missing files or its manifest is malformed."""


def one_line(exc: BaseException, limit: int = 400) -> str:
    """A third-party exception's message on one line, cut at `limit` characters."""
    text = " ".join(str(exc).split())
    return text[:limit] + ("…" if len(text) > limit else "")
