"""The bundle stage: the folder a release is assembled in and the reference files it carries.

A bundle is assembled in a hidden staging folder next to its destination and renamed into
place only when complete, so an interrupted or failed build never leaves a folder that
looks like a finished release. Besides the artifacts it holds the float baseline's golden
inputs and outputs and the evaluation subset with its float outputs, so a device can
re-verify it from its own files (`python -m edgepack.device verify`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..manifest.jsonio import file_entry
from ..verification.calls import head, save_calls, save_npz

GOLDEN_NOTE = ("inputs: one array per model input (in_0, in_1, ... in model.inputs order), one entry per model call; "
               "reference outputs are the float baseline's, one array per model output (arr_0, arr_1, ...)")


class Staging:
    """Context manager: a staging folder renamed to `final` by `commit()`, removed otherwise."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.path = self.final.parent / f".{self.final.name}.partial"

    def __enter__(self) -> "Staging":
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir()
        return self

    def commit(self) -> Path:
        if self.final.exists():
            shutil.rmtree(self.final)
        self.path.rename(self.final)
        return self.final

    def __exit__(self, exc_type, exc, tb):
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        return False


def write_reference_data(root: Path, data, outputs: list[np.ndarray], golden_samples: int) -> tuple[dict, dict]:
    """Golden inputs with float outputs, and the bundled eval subset with float outputs.

    `data`: the evaluation Dataset (model calls per input name, labels); `outputs`: the
    float baseline's outputs over all its calls, concatenated along axis 0. Returns the
    manifest's `golden` and `reference_data` blocks."""
    golden_dir, data_dir = root / "golden", root / "data"
    golden_dir.mkdir()
    data_dir.mkdir()
    calls, batch = data.n_calls, data.batch
    g = min(calls, max(1, golden_samples // batch))
    rows = [len(o) // calls for o in outputs]  # output rows per call
    save_calls(golden_dir / "inputs.npz", head(data.calls, g))
    save_npz(golden_dir / "reference_outputs.npz", *[o[: g * r] for o, r in zip(outputs, rows)])
    save_calls(data_dir / "eval.npz", data.calls, data.y)
    save_npz(data_dir / "eval_reference_outputs.npz", *outputs)
    golden = {"inputs": file_entry(golden_dir / "inputs.npz", root),
              "reference_outputs": file_entry(golden_dir / "reference_outputs.npz", root),
              "samples": int(g * batch), "note": GOLDEN_NOTE}
    reference = {"eval": file_entry(data_dir / "eval.npz", root),
                 "eval_reference_outputs": file_entry(data_dir / "eval_reference_outputs.npz", root)}
    return golden, reference
