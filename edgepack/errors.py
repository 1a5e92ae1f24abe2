"""Errors a user can cause. The CLI prints their message as one line and exits 2.

Every message names the file, field or node concerned and what was expected.
"""


class EdgepackError(Exception):
    """Base class for input and usage errors (exit code 2)."""

    exit_code = 2


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


class OutputError(EdgepackError):
    """The output folder cannot take the bundle: it holds something that is not an edgepack
    bundle, another build is writing it, or it cannot be written (read-only, full, a file)."""


class VerificationFailed(EdgepackError):
    """A bundle or device result that can be read but does not hold: a signature that does
    not match, a device result whose checksums are not the bundle's (exit code 1)."""

    exit_code = 1


# What user code (a model factory, a data entry point, a custom metric) may raise that
# edgepack reports as one line naming the file and function, instead of exiting with it.
USER_CODE_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


def what_raised(exc: BaseException) -> str:
    """User code's exception on one line: `ValueError: bad value`, `SystemExit: sys.exit(0)`,
    `KeyboardInterrupt`."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: sys.exit({'' if exc.code is None else repr(exc.code)})"
    text = one_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def one_line(exc: BaseException, limit: int = 400) -> str:
    """A third-party exception's message on one line, cut at `limit` characters."""
    text = " ".join(str(exc).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def and_more(items: list) -> str:
    """" (and N more)" after the first of `items` is named, or ""."""
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that every cleanup a Ctrl-C runs (staging
    folders, locks, the atomic swap's restore) runs for it too; exit 143."""


_SIGTERM = {"received": False}


def sigterm_received() -> bool:
    """Whether SIGTERM arrived: native code (an import, a C++ extension) can turn the
    Terminated it raised into its own error, which is then still a termination."""
    return _SIGTERM["received"]


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated` in the main thread (a no-op elsewhere)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def raise_terminated(signum, frame):
        _SIGTERM["received"] = True
        raise Terminated()

    signal.signal(signal.SIGTERM, raise_terminated)
