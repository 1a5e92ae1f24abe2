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

    # Layout adapters: the artifact's tensor = onnx_value.transpose(perm), one perm (or None)
    # per input and per output. Set by `with_layout` so callers always pass and receive
    # ONNX-layout arrays.
    input_perms: list | None = None
    output_perms: list | None = None

    def with_layout(self, input_perms=None, output_perms=None) -> "Session":
        self.input_perms = [tuple(p) if p else None for p in input_perms] if input_perms else None
        self.output_perms = [tuple(p) if p else None for p in output_perms] if output_perms else None
        return self

    def io_json(self) -> dict:
        """The artifact's own input/output tensors (its layout, its dtypes), manifest form."""
        def conv(specs):
            return [{"name": s.name, "shape": [int(d) if isinstance(d, (int, np.integer)) else d for d in s.shape],
                     "dtype": s.dtype, "scale": s.scale, "zero_point": s.zero_point} for s in specs]

        return {"inputs": conv(self.inputs), "outputs": conv(self.outputs)}

    def prepare(self, feed) -> list[np.ndarray]:
        """One call's ONNX-layout inputs (a dict by input name, or one array for a single-input
        model) → what the runtime takes, in its input order: layout, integer I/O, dtype.

        Inputs are matched by name; a runtime that renamed them is fed in ONNX input order."""
        if not isinstance(feed, dict):
            feed = {self.inputs[0].name: feed}
        if len(feed) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} inputs "
                             f"({', '.join(s.name for s in self.inputs)}); got {len(feed)} ({', '.join(feed)})")
        by_name = all(s.name in feed for s in self.inputs)
        values = [feed[s.name] for s in self.inputs] if by_name else list(feed.values())
        out = []
        for i, (x, spec) in enumerate(zip(values, self.inputs)):
            x = np.asarray(x)
            perm = self.input_perms[i] if self.input_perms and i < len(self.input_perms) else None
            if perm is not None:
                x = np.transpose(x, perm)
            want = np.dtype(spec.dtype)
            if want.kind in "iu" and x.dtype.kind == "f" and spec.scale:  # float data into integer I/O
                info = np.iinfo(want)
                x = np.clip(np.round(x / spec.scale) + spec.zero_point, info.min, info.max)
            # ascontiguousarray makes a 0-d array 1-d: a scalar input keeps its shape
            out.append(np.ascontiguousarray(x.astype(want, copy=False)).reshape(x.shape))
        return out

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

    def run(self, feed) -> list[np.ndarray]:
        """Run one model call (ONNX-layout inputs by name, or one array for a single-input
        model); quantised integer I/O is (de)quantised with the model's own scale and zero
        point, and layouts are converted here."""
        return self.finish(self._run(self.prepare(feed)))

    def invoke(self, prepared: list[np.ndarray]) -> list[np.ndarray]:
        """Run already prepared inputs: what latency measurement times."""
        return self._run(prepared)

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        raise RuntimeUnavailable(f"{type(self).__name__} cannot run models")
