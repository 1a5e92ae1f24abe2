"""Export a torch model (nn.Module or ExportedProgram) to an ONNX file with static shapes."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from .errors import ModelError, one_line


def export_torch(module, input_shape: tuple[int, ...], out_path: Path, opset: int = 18) -> Path:
    import torch

    example = (torch.zeros(*input_shape, dtype=torch.float32),)
    if isinstance(module, torch.nn.Module):
        module = module.eval()
    out_path = Path(out_path)
    sink = io.StringIO()
    try:
        # The dynamo exporter prints progress and warnings; the CLI owns the terminal.
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), _quiet_loggers():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                external_data=False,
                optimize=True,
            )
            program.save(str(out_path), external_data=False)
    except Exception as exc:
        raise ModelError(f"torch.onnx export failed for input shape {list(input_shape)}: "
                         f"{type(exc).__name__}: {one_line(exc)}") from None
    return out_path


@contextlib.contextmanager
def _quiet_loggers():
    names = ["torch.onnx", "torch.export", "torch._dynamo", "onnxscript"]
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        yield
    finally:
        for n, lvl in saved.items():
            logging.getLogger(n).setLevel(lvl)
