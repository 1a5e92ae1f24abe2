"""What every artifact writer receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GraphSet:
    """The graphs a writer may draw from for one target.

    `int8_qdq` is the ONNX QDQ graph quantised with the target's settings (None when the
    profile emits no ONNX int8 artifact); `calibration` is the dataset it was calibrated on,
    for writers that run their own quantiser on the same samples.
    """

    float_onnx: Path
    int8_qdq: Path | None = None
    calibration: object = None
    quant_settings: object = None
    # Per-tensor (min, max) measured once on the float ONNX graph (name -> range).
    ranges: dict | None = None
    # Shared by all targets of one build, so identical conversions run once.
    cache: dict = field(default_factory=dict)
    progress: object = None
    source: str = ""  # the user's model, for error messages (paths here are staging paths)


@dataclass
class Artifact:
    """One file a device loads, plus what it needs to be run and checked."""

    kind: str  # e.g. "ort-int8"
    path: Path
    runtime: str  # "onnxruntime" | "litert"
    precision: str  # "float32" | "int8" | "float16" | "dynamic-int8"
    # The ONNX graph whose math this artifact implements; "reference numerics" run it
    # without fused int8 kernels.
    reference_onnx: Path | None = None
    extra_files: list[Path] = field(default_factory=list)
    # {"inputs": [{"name", "layout", "perm"}], "outputs": [...]}: the artifact's tensor is
    # the ONNX value transposed by perm. Empty: same layout as the ONNX graph.
    layout: dict = field(default_factory=dict)
    quantization: dict = field(default_factory=dict)
