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

GOLDEN_NOTE = "reference outputs are the float baseline's, one array per model output (arr_0, arr_1, ...)"


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


def write_reference_data(root: Path, x_eval: np.ndarray, y_eval, outputs: list[np.ndarray], batch: int,
                         golden_samples: int) -> tuple[dict, dict]:
    """Golden inputs with float outputs, and the bundled eval subset with float outputs.

    Returns the manifest's `golden` and `reference_data` blocks."""
    golden_dir, data_dir = root / "golden", root / "data"
    golden_dir.mkdir()
    data_dir.mkdir()
    g = min(len(x_eval), max(batch, (golden_samples // batch) * batch or batch))
    np.save(golden_dir / "inputs.npy", x_eval[:g])
    np.savez(golden_dir / "reference_outputs.npz", *[o[:g] for o in outputs])
    arrays = {"x": x_eval} if y_eval is None else {"x": x_eval, "y": y_eval}
    np.savez(data_dir / "eval.npz", **arrays)
    np.savez(data_dir / "eval_reference_outputs.npz", *outputs)
    golden = {"inputs": file_entry(golden_dir / "inputs.npy", root),
              "reference_outputs": file_entry(golden_dir / "reference_outputs.npz", root),
              "samples": int(g), "note": GOLDEN_NOTE}
    reference = {"eval": file_entry(data_dir / "eval.npz", root),
                 "eval_reference_outputs": file_entry(data_dir / "eval_reference_outputs.npz", root)}
    return golden, reference
