"""Model calls on disk: the bundle's golden inputs and evaluation data. numpy only.

In memory, data for a model is one array per input holding one entry per model call,
`(calls, *input_shape)`, keyed by input name. On disk (`.npz`) the arrays are stored under
`in_0`, `in_1`, ... in the model's input order (names from a model never become archive
member names) and the labels, if any, under `y`; the manifest's `model.inputs` gives the
names. Bundles written before multi-input support hold one input's samples stacked along
the batch axis (`golden/inputs.npy`, `x` in `data/eval.npz`); those still load.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can carry: no build time in the file


def save_npz(path: Path, *positional: np.ndarray, **arrays: np.ndarray) -> None:
    """Like np.savez (uncompressed, positional arrays as arr_0, arr_1, ...), but with fixed
    member timestamps: the same arrays give the same bytes."""
    members = {**{f"arr_{i}": a for i, a in enumerate(positional)}, **arrays}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in members.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE), buf.getvalue())


def save_calls(path: Path, calls: dict[str, np.ndarray], y: np.ndarray | None = None) -> None:
    arrays = {f"in_{i}": np.asarray(v) for i, v in enumerate(calls.values())}
    if y is not None:
        arrays["y"] = np.asarray(y)
    save_npz(path, **arrays)


def load_calls(path: Path, inputs: list[dict]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Calls by input name and labels (or None). `inputs`: the manifest's `model.inputs`."""
    path = Path(path)
    if path.suffix == ".npy":
        return _legacy(np.load(path, allow_pickle=False), inputs), None
    with np.load(path, allow_pickle=False) as z:
        y = z["y"] if "y" in z.files else None
        if "x" in z.files and "in_0" not in z.files:
            return _legacy(z["x"], inputs), y
        missing = [f"in_{i}" for i in range(len(inputs)) if f"in_{i}" not in z.files]
        if missing:
            raise ValueError(f"{path.name}: no array {', '.join(missing)} for the model's {len(inputs)} inputs")
        calls = {t["name"]: z[f"in_{i}"] for i, t in enumerate(inputs)}
    counts = {len(v) for v in calls.values()}
    if len(counts) != 1:
        raise ValueError(f"{path.name}: inputs hold different numbers of calls")
    for t in inputs:
        if list(calls[t["name"]].shape[1:]) != list(t["shape"]):
            raise ValueError(f"{path.name}: input '{t['name']}' has calls of shape "
                             f"{list(calls[t['name']].shape[1:])}, the model takes {list(t['shape'])}")
    return calls, y


def _legacy(x: np.ndarray, inputs: list[dict]) -> dict[str, np.ndarray]:
    (spec,) = inputs
    shape = list(spec["shape"])
    calls = len(x) // shape[0]
    return {spec["name"]: x[: calls * shape[0]].reshape(calls, *shape)}


def head(calls: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first `n` calls."""
    return {k: v[:n] for k, v in calls.items()}
