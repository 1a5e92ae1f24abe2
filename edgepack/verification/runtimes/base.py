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

    # Layout adapters: the artifact's tensor = onnx_value.transpose(perm). Set by
    # `with_layout` so callers always pass and receive ONNX-layout arrays.
    input_perm: tuple[int, ...] | None = None
    output_perms: list | None = None

    def with_layout(self, input_perm=None, output_perms=None) -> "Session":
        self.input_perm = tuple(input_perm) if input_perm else None
        self.output_perms = [tuple(p) if p else None for p in output_perms] if output_perms else None
        return self

    def io_json(self) -> dict:
        """The artifact's own input/output tensors (its layout, its dtypes), manifest form."""
        def conv(specs):
            return [{"name": s.name, "shape": [int(d) if isinstance(d, (int, np.integer)) else d for d in s.shape],
                     "dtype": s.dtype, "scale": s.scale, "zero_point": s.zero_point} for s in specs]

        return {"inputs": conv(self.inputs), "outputs": conv(self.outputs)}

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """ONNX-layout float input → what the runtime takes (layout, integer I/O)."""
        if self.input_perm is not None:
            x = np.transpose(x, self.input_perm)
        spec = self.inputs[0]
        if np.dtype(spec.dtype).kind in "iu" and np.asarray(x).dtype.kind == "f" and spec.scale:
            info = np.iinfo(spec.dtype)
            x = np.clip(np.round(x / spec.scale) + spec.zero_point, info.min, info.max).astype(spec.dtype)
        return np.ascontiguousarray(x)

    def finish(self, outs: list[np.ndarray]) -> list[np.ndarray]:
        """Runtime outputs → float arrays in ONNX layout."""
        result = []
        for i, (o, spec) in enumerate(zip(outs, self.outputs)):
            if np.dtype(spec.dtype).kind in "iu" and spec.scale:
                o = (o.astype(np.float32) - spec.zero_point) * spec.scale
            if self.output_perms and self.output_perms[i] is not None:
                o = np.transpose(o, np.argsort(self.output_perms[i]))
            result.append(np.asarray(o))
        return result

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run one model-shaped float input in ONNX layout; integer I/O is (de)quantised
        with the model's own scale and zero point, and layouts are converted here."""
        return self.finish(self._run(self.prepare(x)))

    def invoke(self, prepared: np.ndarray) -> list[np.ndarray]:
        """Run an already prepared input: what latency measurement times."""
        return self._run(prepared)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        raise RuntimeUnavailable(f"{type(self).__name__} cannot run models")
