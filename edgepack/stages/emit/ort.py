"""ONNX Runtime mobile artifacts: `.ort` flatbuffers and the reduced-build operator config.

Conversion uses onnxruntime's own converter. With the "fixed" optimisation style the
graph is optimised at the level `all` for the profile's target platform and frozen, which
is what ONNX Runtime recommends for CPU-only mobile deployments.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import onnx

from ...errors import ModelError, one_line
from ..quantize import io_quant_params
from .base import Artifact, GraphSet

# The fused intermediate is an ONNX protobuf, which cannot exceed 2 GB.
_TWO_PASS_MAX_BYTES = 1 << 30


def emit(graphs: GraphSet, profile, out_dir: Path) -> list[Artifact]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for kind in profile.artifacts:
        if not kind.startswith("ort-"):
            continue
        if kind == "ort-float":
            src, precision = graphs.float_onnx, "float32"
        else:
            src, precision = graphs.int8_qdq, "int8"
        stem = f"model.{precision}"
        ort_path, config_path = convert_to_ort(src, out_dir, stem, profile.ort, graphs.source or str(src))
        quant = {}
        if precision == "int8":
            s = graphs.quant_settings
            quant = {
                "scheme": "static QDQ (onnxruntime.quantization)",
                "per_channel": s.per_channel,
                "activation_type": s.activation_type,
                "weight_type": s.weight_type,
                "calibration_method": s.calibration_method,
                "reduce_range": s.reduce_range,
                "io": io_quant_params(onnx.load(str(src))),
            }
        artifacts.append(Artifact(
            kind=kind,
            path=ort_path,
            runtime="onnxruntime",
            precision=precision,
            reference_onnx=Path(src),
            extra_files=[config_path],
            quantization=quant,
        ))
    return artifacts


def convert_to_ort(src: Path, out_dir: Path, stem: str, settings, source: str = "") -> tuple[Path, Path]:
    """Convert one ONNX file; returns (model.ort, model.required_operators.config).

    This is what onnxruntime's `convert_onnx_models_to_ort` does, with two differences.
    For amd64 that tool keeps the NCHWc layout transformer, which bakes the *build host's*
    vector width (8 floats for AVX2, 16 for AVX-512) into the file; a profile with
    `portable_layout = true` excludes it, so an x86-64 artifact built on an AVX-512 host
    still runs on an AVX2 device. And the "fixed" style optimises in two passes (fuse,
    then re-load and finish), which drops the dead values onnxruntime would otherwise
    serialise; the graph and kernels are the same.
    """
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    ort_path = out_dir / f"{stem}.ort"
    config_path = out_dir / f"{stem}.required_operators.config"
    disabled = ["NchwcTransformer"] if settings.target_platform == "arm" or settings.portable_layout else None

    def save(model: Path, out: Path, level, fmt: str) -> None:
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3
        so.add_session_config_entry("session.save_model_format", fmt)
        # ARM's int8 kernels take signed activations; x86 ones want u8 (as onnxruntime's tool sets it).
        so.add_session_config_entry("session.qdqisint8allowed", "1" if settings.target_platform == "arm" else "0")
        if settings.optimization_style == "runtime":
            so.add_session_config_entry("optimization.minimal_build_optimizations", "save")
        ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"],
                             disabled_optimizers=disabled)

    try:
        with tempfile.TemporaryDirectory(prefix="edgepack-ort-") as tmp:
            if settings.optimization_style == "fixed" and Path(src).stat().st_size < _TWO_PASS_MAX_BYTES:
                # onnxruntime serialises every value its optimisers ever created, including
                # the outputs of the Q/DQ nodes it fused away (450 of 835 values, 7 % of a
                # pruned MobileNetV2's int8 file). Fusing first and re-loading the fused
                # ONNX graph leaves only live values; the kernels are the same.
                fused = Path(tmp) / "fused.onnx"
                save(Path(src), fused, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "ONNX")
                save(fused, ort_path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "ORT")
            else:
                level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if settings.optimization_style == "fixed"
                         else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
                save(Path(src), ort_path, level, "ORT")
        with _silenced_logger("ort_format_model"):
            create_config_from_models([ort_path], config_path, enable_type_reduction=False)
        # The generator records the absolute (staging) path; keep the file reproducible.
        config_path.write_text(config_path.read_text().replace(str(ort_path), ort_path.name))
    except Exception as exc:
        raise ModelError(f"{source or src}: conversion of the {stem} graph to ORT format failed: "
                         f"{one_line(exc)}") from None
    return ort_path, config_path


@contextlib.contextmanager
def _silenced_logger(prefix: str):
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith(prefix)]
    loggers.append(logging.getLogger(f"{prefix}.utils"))
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)
