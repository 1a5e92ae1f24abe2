"""edgepack: from a trained model to verified, per-device release artifacts.

This module deliberately imports nothing at import time: `python -m edgepack.device`
must run on a device that has only numpy and one runtime installed. The public API is
resolved lazily on first attribute access.
"""

__version__ = "0.1.0"

_LAZY = {
    "build": ("edgepack.pipeline", "build"),
    "BuildConfig": ("edgepack.config", "BuildConfig"),
    "BuildResult": ("edgepack.pipeline", "BuildResult"),
    "verify_bundle": ("edgepack.device", "verify_bundle"),
    "load_targets": ("edgepack.targets", "load_targets"),
    "inspect_artifact": ("edgepack.inspect", "inspect_artifact"),
    "EdgepackError": ("edgepack.errors", "EdgepackError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'edgepack' has no attribute {name!r}")
