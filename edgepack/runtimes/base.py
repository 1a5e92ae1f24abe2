"""The runtime-neutral session interface."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class RuntimeUnavailable(Exception):
    """The runtime an artifact needs is not installed (or cannot load the file)."""


@dataclass(frozen=True)
class IOSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    # For integer I/O: real = (q - zero_point) * scale
    scale: float | None = None
    zero_point: int | None = None


@dataclass
class Session:
    """Base class: subclasses set `inputs`, `outputs`, `runtime`, `version`, implement `_run`."""

    runtime: str = ""
    version: str = ""
    threads: int = 1
    inputs: list[IOSpec] = field(default_factory=list)
    outputs: list[IOSpec] = field(default_factory=list)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run one model-shaped float input; integer I/O is quantised/dequantised here."""
        spec = self.inputs[0]
        if np.dtype(spec.dtype).kind in "iu" and np.asarray(x).dtype.kind == "f" and spec.scale:
            info = np.iinfo(spec.dtype)
            x = np.clip(np.round(x / spec.scale) + spec.zero_point, info.min, info.max).astype(spec.dtype)
        outs = self._run(np.ascontiguousarray(x))
        result = []
        for o, spec in zip(outs, self.outputs):
            if np.dtype(spec.dtype).kind in "iu" and spec.scale:
                o = (o.astype(np.float32) - spec.zero_point) * spec.scale
            result.append(np.asarray(o))
        return result

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        raise RuntimeUnavailable(f"{type(self).__name__} cannot run models")
