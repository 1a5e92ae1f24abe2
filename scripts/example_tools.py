"""What the example-making scripts share: importing an example's model file by path, and
file checksums. Reproducible `.npz` writing is edgepack's own (`save_npz`)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from edgepack.verification.calls import save_npz

__all__ = ["load_module", "save_npz", "sha256"]


def load_module(path: Path, name: str):
    """Import a Python file by path (an example's model.py is not part of a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
