"""Load a model source: an ONNX file, a torch factory `file.py:factory`, or a `.pt2` file.

Only this module, `compress` and `export` import torch, and only when a torch source is
actually used.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError


@dataclass
class LoadedModel:
    """A model in its source framework: `kind` is "onnx" or "torch"."""

    kind: str
    source: str
    onnx_path: Path | None = None
    module: Any = None  # torch.nn.Module for torch sources


def load_model(model_section) -> LoadedModel:
    if model_section.onnx is not None:
        path = Path(model_section.onnx)
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        return LoadedModel("onnx", str(path), onnx_path=path)
    if model_section.input_shape is None and not model_section.inputs:
        raise ModelError("torch models need a static input shape: set [model] input_shape or --input-shape")
    if model_section.torch is not None:
        return LoadedModel("torch", model_section.torch, module=_load_factory(model_section.torch))
    return LoadedModel("torch", str(model_section.pt2), module=_load_pt2(Path(model_section.pt2)))


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ModelError("this model is a PyTorch source; install the torch extra: "
                         "pip install 'edgepack[torch]'") from None
    return torch


def _load_factory(spec: str):
    torch = _import_torch()
    file_part, _, func = spec.rpartition(":")
    path = Path(file_part)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    name = f"_edgepack_model_{path.stem}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        mod_spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelError(f"{path}: importing it failed ({type(exc).__name__}: {exc})") from None
    factory = getattr(module, func, None)
    if not callable(factory):
        raise ModelError(f"{path}: no callable named '{func}' (expected a factory returning an nn.Module)")
    try:
        model = factory()
    except Exception as exc:
        raise ModelError(f"{spec}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{spec}: the factory returned {type(model).__name__}; expected a torch.nn.Module")
    return model.eval()


def _load_pt2(path: Path):
    torch = _import_torch()
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not a readable torch.export .pt2 file ({type(exc).__name__}: {exc})") from None
    return program
