"""edgepack: from a trained model to verified, per-device release artifacts.

This module deliberately imports nothing at import time: `python -m edgepack.device`
must run on a device that has only numpy and one runtime installed. The public API
(`edgepack.build`, `verify`, `merge`, `inspect`, see `edgepack.api`) is resolved lazily
on first attribute access.
"""

__version__ = "0.2.0"

_LAZY = {
    "build": ("edgepack.api", "build"),
    "verify": ("edgepack.api", "verify"),
    "merge": ("edgepack.api", "merge"),
    "inspect": ("edgepack.api", "inspect"),
    "pack": ("edgepack.api", "pack"),
    "BuildResult": ("edgepack.pipeline", "BuildResult"),
    "VerifyResult": ("edgepack.api", "VerifyResult"),
    "ArtifactInfo": ("edgepack.api", "ArtifactInfo"),
    "BuildConfig": ("edgepack.config", "BuildConfig"),
    "Manifest": ("edgepack.manifest.models", "Manifest"),
    "DeviceResult": ("edgepack.manifest.models", "DeviceResult"),
    "Reporter": ("edgepack.progress", "Reporter"),
    "load_targets": ("edgepack.targets", "load_targets"),
    "EdgepackError": ("edgepack.errors", "EdgepackError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'edgepack' has no attribute {name!r}")
