"""Export a torch model (nn.Module or ExportedProgram) to an ONNX file with static shapes."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from ..errors import ModelError, one_line

# The dynamo exporter announces its phases on stdout as "[torch.onnx] <phase>..." lines;
# they are the export's inner progress (the line's first words, in this order).
EXPORT_PHASES = ("Obtain model graph", "Run decomposition", "Translate the graph", "Optimize the ONNX graph")


class _PhaseSink(io.StringIO):
    """Swallows the exporter's stdout and reports its phases as (done, total, detail)."""

    def __init__(self, progress):
        super().__init__()
        self._progress, self._seen = progress, 0

    def write(self, text: str) -> int:
        if self._progress is not None:
            for line in text.splitlines():
                msg = line.removeprefix("[torch.onnx] ").strip()
                for i, phase in enumerate(EXPORT_PHASES[self._seen:], start=self._seen):
                    if msg.startswith(phase):
                        self._seen = i + 1
                        self._progress(i, len(EXPORT_PHASES) + 1, f"exporting to ONNX: {phase.lower()}")
        return super().write(text)


def export_torch(module, inputs, out_path: Path, opset: int = 18, progress=None) -> Path:
    """Export with torch.onnx's dynamo exporter; `progress(done, total, detail)`, when given,
    hears its phases (model graph, decomposition, translation, optimisation, saving).

    `inputs`: the forward() arguments in order, `[(name, shape, dtype), ...]`, or one shape
    for a single float32 input named "input"."""
    import torch

    if inputs and isinstance(inputs[0], int):
        inputs = [("input", tuple(inputs), "float32")]
    input_shape = {name: list(shape) for name, shape, _ in inputs}
    example = tuple(torch.zeros(*shape, dtype=getattr(torch, dtype)) for _, shape, dtype in inputs)
    if isinstance(module, torch.nn.Module):
        module = module.eval()
    out_path = Path(out_path)
    sink = _PhaseSink(progress)
    try:
        # The dynamo exporter prints progress and warnings; the CLI owns the terminal.
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), _quiet_loggers():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                opset_version=opset,
                input_names=[name for name, _, _ in inputs],
                external_data=False,
                optimize=True,
            )
            if progress is not None:
                progress(len(EXPORT_PHASES), len(EXPORT_PHASES) + 1, "exporting to ONNX: saving")
            program.save(str(out_path), external_data=False)
    except Exception as exc:
        shapes = list(input_shape.values())[0] if len(input_shape) == 1 else input_shape
        raise ModelError(f"torch.onnx export failed for input shape {shapes}: "
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
