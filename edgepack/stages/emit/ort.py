"""ONNX Runtime mobile artifacts: `.ort` flatbuffers and the reduced-build operator config.

Conversion uses onnxruntime's own converter. With the "fixed" optimisation style the
graph is optimised at the level `all` for the profile's target platform and frozen, which
is what ONNX Runtime recommends for CPU-only mobile deployments.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
from pathlib import Path

import onnx

from ...errors import ModelError, one_line
from ..quantize import io_quant_params
from .base import Artifact, GraphSet
from .ort_canonical import canonicalise

# The fused intermediate is an ONNX protobuf, which cannot exceed 2 GB.
_TWO_PASS_MAX_BYTES = 1 << 30


# kind -> (precision, file stem); the source graph of each is made by `_source_graph`
KINDS = {
    "ort-float": ("float32", "model.float32"),
    "ort-int8": ("int8", "model.int8"),
    "ort-float16": ("float16", "model.float16"),
    "ort-dynamic-int8": ("dynamic-int8", "model.dynamic-int8"),
    "ort-int16": ("int16x8", "model.int16x8"),
    "ort-int8-pot": ("int8", "model.int8-pot"),
    "ort-binary": ("binary", "model.binary"),
    "ort-ternary": ("ternary", "model.ternary"),
}


def emit(graphs: GraphSet, profile, out_dir: Path) -> list[Artifact]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for kind in profile.artifacts:
        if not kind.startswith("ort-"):
            continue
        precision, stem = KINDS[kind]
        src, quant = _source_graph(kind, graphs, profile, out_dir, stem)
        ort_path, config_path = convert_to_ort(src, out_dir, stem, profile.ort, graphs.source or str(src),
                                               keep_precision=kind == "ort-float16",
                                               exact_matmul=kind in ("ort-int16", "ort-binary", "ort-ternary"),
                                               layout_at_load=kind == "ort-float")
        if kind == "ort-int8":
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


def _source_graph(kind: str, graphs: GraphSet, profile, out_dir: Path, stem: str) -> tuple[Path, dict]:
    """(ONNX graph the .ort is converted from, the kind's quantisation record). Graphs made
    here (edgepack.stages.formats) are written beside the artifact as its reference graph;
    targets with equal inputs share one conversion (copied)."""
    import shutil

    from .. import formats

    if kind == "ort-float":
        return graphs.float_onnx, {}
    if kind == "ort-int8":
        return graphs.int8_qdq, {}
    s = graphs.quant_settings
    per_channel = s.per_channel if s is not None else profile.quantization.per_channel
    reduce_range = s.reduce_range if s is not None else profile.resolved_reduce_range()
    key = ("ort-format", kind, str(graphs.float_onnx), s.key() if s is not None else (per_channel, reduce_range),
           id(graphs.ranges))
    # not f"{stem}.onnx": that name is the artifact itself when a profile ships ONNX files (layout_at_load)
    dest = out_dir / (f"{stem}.qdq.onnx" if kind in ("ort-int16", "ort-int8-pot") else f"{stem}.reference.onnx")
    made, quant = graphs.cache.get(key, (None, None))
    if made is not None and Path(made).is_file():  # (a search trial's scratch copy may be gone)
        if Path(made) != dest:
            shutil.copyfile(made, dest)
        return dest, quant
    src, source = graphs.float_onnx, graphs.source
    if kind == "ort-float16":
        _, kept = formats.float16_graph(src, dest, source)
        quant = {"scheme": "float16 weights and activations (onnxruntime.transformers.float16), float32 I/O",
                 "weight_type": "float16", "activation_type": "float16",
                 # ops the build host's ONNX Runtime has no float16 kernel for: float32 between the
                 # Casts it inserted, which the file keeps (basic optimisation only, see convert_to_ort)
                 "float32_ops": kept, "optimization": "basic (keeps float16 weights)"}
    elif kind == "ort-dynamic-int8":
        formats.dynamic_int8_graph(src, dest, per_channel=per_channel, reduce_range=reduce_range, source=source)
        quant = {"scheme": "dynamic: int8 weights, activations quantised at run time "
                           "(onnxruntime.quantization.quantize_dynamic)",
                 "weight_type": "int8", "activation_type": "uint8 (quantised per call)", "per_channel": per_channel,
                 "reduce_range": reduce_range, "op_types": list(formats.DYNAMIC_OP_TYPES)}
    elif kind == "ort-int16":
        formats.int16_qdq_graph(src, graphs.ranges, s, dest, source)
        quant = {"scheme": "static QDQ, 16x8: int16 activations (symmetric), int8 weights (opset 21)",
                 "activation_type": "int16", "weight_type": "int8", "per_channel": s.per_channel,
                 "calibration_method": s.calibration_method, "symmetric_activations": True,
                 "io": io_quant_params(onnx.load(str(dest)))}
    elif kind == "ort-int8-pot":
        _, summary = formats.pot_qdq_graph(src, graphs.ranges, s, dest, source)
        quant = {"scheme": "static QDQ, power-of-two scales (fixed-point)", "activation_type": "int8",
                 "weight_type": "int8", "symmetric_activations": True, "per_channel": s.per_channel,
                 "reduce_range": s.reduce_range, "calibration_method": s.calibration_method,
                 "scale_rounding": "up: 2^ceil(log2 s), so nothing clips", **summary,
                 "io": io_quant_params(onnx.load(str(dest)))}
    elif kind in ("ort-binary", "ort-ternary"):
        mode = kind.split("-", 1)[1]
        _, summary = formats.lowbit_graph(src, dest, mode, source)
        quant = {"scheme": (f"research mode: {mode} weights per output channel ("
                            + ("{-a, +a}, a = mean |w|; XNOR-Net" if mode == "binary" else
                               "{-a, 0, +a}, threshold 0.7 mean |w|; TWN")
                            + ") in int8 containers with a in a DequantizeLinear; float activations"),
                 "weight_type": "int8", "activation_type": "float32", **summary,
                 "note": "research mode: runtimes store and compute these as int8/float; no speed gain"}
    else:
        raise ValueError(f"unknown ORT artifact kind {kind!r}")
    graphs.cache[key] = dest, quant
    return dest, quant


def convert_to_ort(src: Path, out_dir: Path, stem: str, settings, source: str = "",
                   keep_precision: bool = False, exact_matmul: bool = False,
                   layout_at_load: bool = False) -> tuple[Path, Path]:
    """Convert one ONNX file; returns (model.ort, model.required_operators.config).

    This is what onnxruntime's `convert_onnx_models_to_ort` does, with two differences.
    For amd64 that tool keeps the NCHWc layout transformer, which bakes the *build host's*
    vector width (8 floats for AVX2, 16 for AVX-512) into the file; a profile with
    `portable_layout = true` excludes it, so an x86-64 artifact built on an AVX-512 host
    still runs on an AVX2 device (a block-16 file fails on one: ReorderOutput's channel
    check; seen under qemu-x86_64 -cpu Haswell). ONNX Runtime never applies the layout to an
    ORT-format file at load, not even a full build (only the QDQ, Conv+activation and int8
    NHWC transformers run then), so a portable float .ort runs without NCHWc kernels: on
    CNNs, measured 1.1-3.0x the plain ONNX file's time (1 thread). A profile whose devices all have
    one block (`nchwc_block`: 8 for AVX2 without AVX-512F, 16 for AVX-512F) gets the
    layout, and the plain file's speed, when the build host has that same block (checked).
    And the "fixed" style optimises in two passes (fuse,
    then re-load and finish), which drops the dead values onnxruntime would otherwise
    serialise; the graph and kernels are the same.

    `keep_precision`: basic optimisations only (one pass). For a float16 graph, the higher
    levels fold the Casts onnxruntime inserts around ops without float16 kernels into
    float32 weights (on x86-64: nearly all of them), which would leave a float32 file.
    `exact_matmul`: no QDQ fusions. onnxruntime fuses DequantizeLinear(int8 weight) → MatMul
    into MatMulNBits, whose default accuracy level (4) quantises the float (or int16)
    activations to int8 (measured on a 16x8 graph: 85 dB SQNR as written, 42 dB fused), and
    whose `weight_prepacked` attribute (1.32) onnxruntime 1.22 rejects: the file would not
    load on the Raspberry Pi profiles' runtime. For graphs without int8 activations (16x8,
    binary/ternary weights) those fusions are all the QDQ transformer would do.
    """
    import onnxruntime as ort

    ort_path = out_dir / f"{stem}.ort"
    config_path = out_dir / f"{stem}.required_operators.config"
    disabled = _layout_exclusions(settings, source or str(src))
    disabled = (disabled + (["QDQSelectorActionTransformer"] if exact_matmul else [])) or None

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

    if layout_at_load and getattr(settings, "layout_at_load", False) and settings.target_platform == "amd64":
        return _onnx_for_layout_at_load(src, out_dir, stem, save, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        source)
    try:
        with tempfile.TemporaryDirectory(prefix="edgepack-ort-") as tmp:
            if keep_precision:
                save(Path(src), ort_path, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "ORT")
            elif settings.optimization_style == "fixed" and Path(src).stat().st_size < _TWO_PASS_MAX_BYTES:
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
        # onnxruntime lays the file out in an order that changes from process to process
        # (hash maps seeded by memory addresses): the same model, written in one fixed order
        canonicalise(ort_path)
        _operators_config(ort_path, config_path, ort_path.name)
    except Exception as exc:
        raise ModelError(f"{source or src}: conversion of the {stem} graph to ORT format failed: "
                         f"{one_line(exc)}") from None
    return ort_path, config_path


def _onnx_for_layout_at_load(src: Path, out_dir: Path, stem: str, save, level, source: str) -> tuple[Path, Path]:
    """`layout_at_load`: the float graph as an ONNX file optimised up to the extended level
    (every fusion, no layout), which a full ONNX Runtime build lays out for its own CPU's
    NCHWc block when it loads it (it never does for an ORT-format file). Measured on seven
    CNNs: 0.98-1.05x the plain file's time, against 1.1-2.5x for the portable .ort. Its inputs
    and outputs keep the dims the user's graph declared dynamic (`_with_declared_dims`); when
    ONNX Runtime cannot optimise the graph so, the pinned calibration shape, as before."""

    path = out_dir / f"{stem}.onnx"
    config_path = out_dir / f"{stem}.required_operators.config"
    try:
        with tempfile.TemporaryDirectory(prefix="edgepack-ort-") as tmp:
            try:
                declared = _with_declared_dims(Path(src), Path(tmp) / "declared.onnx")
                if declared is not None:
                    save(declared, path, level, "ONNX")
            except Exception:  # noqa: BLE001 - not writable or not loadable so: the pinned dims, as before
                declared = None
            if declared is None:
                save(Path(src), path, level, "ONNX")
            # The config generator reads ORT format only: the same graph, saved as one.
            twin = Path(tmp) / f"{stem}.ort"
            save(path, twin, level, "ORT")
            _operators_config(twin, config_path, path.name)
    except Exception as exc:
        raise ModelError(f"{source or src}: optimising the {stem} graph for ONNX Runtime failed: "
                         f"{one_line(exc)}") from None
    return path, config_path


def _with_declared_dims(src: Path, dest: Path) -> Path | None:
    """`src` with the input and output dims the user's graph declared where it declared them
    dynamic (a symbol, or -1/unknown, written as a symbol) instead of the calibration shape the
    build pinned, intermediate shapes dropped, saved at `dest`; None when the source dims were
    all fixed (or were not recorded: a PyTorch export) or the graph is too large to rewrite.

    Why: ONNX Runtime optimises a graph by the shapes it can prove. With every dim fixed its
    MatMulAddFusion turns each 3-D MatMul + bias Add into Reshape → Gemm → Reshape, slower than
    the MatMul it replaces: all-MiniLM-L6-v2 with only its input dims fixed to 1x128 ran 1.09x its
    own time. Measured with ORT 1.32, default session options, 1 intra-op thread, thread CPU time,
    interleaved medians, against the user's plain file: MiniLM's artifact 1.07-1.09x pinned,
    0.99-1.00x with the declared dims (24 of its 36 MatMul + Add stay MatMuls; the 12 the
    cleaning step already fused stay Gemms); saral-rec-small (PP-OCR rec) 0.99-1.01x → 0.99-1.00x,
    ppocr-cls 0.92-0.96x → 0.85-0.91x, oww-embedding 0.98-0.99x → 0.96-0.97x. The golden inputs
    keep the calibration shape, and the verifier runs the artifact on them."""
    from ..graph import declared_dims, graph_inputs

    if src.stat().st_size >= _TWO_PASS_MAX_BYTES:
        return None
    model = onnx.load(str(src))
    declared = declared_dims(model)
    if not declared:
        return None

    def restore(values, dims_by_name: dict) -> bool:
        changed = False
        for vi in values:
            want = dims_by_name.get(vi.name)
            dims = vi.type.tensor_type.shape.dim
            if want is None or len(want) != len(dims):
                continue
            for axis, (d, w) in enumerate(zip(dims, want)):
                if not isinstance(w, int):
                    d.Clear()
                    d.dim_param = w or f"{vi.name}_dim{axis}"
                    changed = True
        return changed

    if not restore(graph_inputs(model), declared.get("inputs", {})):
        return None
    restore(model.graph.output, declared.get("outputs", {}))
    _drop_value_info(model.graph)
    onnx.save(model, str(dest))
    return dest


def _drop_value_info(graph: onnx.GraphProto) -> None:
    """Forget inferred intermediate shapes (they hold the pinned dims), in subgraphs too."""
    del graph.value_info[:]
    for node in graph.node:
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                _drop_value_info(sub)


def _operators_config(ort_file: Path, config_path: Path, name: str) -> None:
    """The reduced-build operator config of an ORT-format file, naming it `name` (the
    generator records the absolute staging path; the file stays reproducible)."""
    from ...ort_tools import ort_format_model

    create_config_from_models = ort_format_model().create_config_from_models

    with _silenced_logger("ort_format_model"):
        create_config_from_models([ort_file], config_path, enable_type_reduction=False)
    config_path.write_text(config_path.read_text().replace(str(ort_file), name))


def _layout_exclusions(settings, source: str) -> list[str]:
    """Optimisers to disable for the profile's layout policy (see `convert_to_ort`)."""
    if settings.target_platform == "arm":
        return ["NchwcTransformer"]
    block = getattr(settings, "nchwc_block", None)
    if block is not None:
        host = host_nchwc_block()
        if host != block:
            raise ModelError(
                f"{source}: the target profile asks for ONNX Runtime's NCHWc layout with block {block} "
                f"(ort.nchwc_block) but this build host lays out with "
                f"{'no NCHWc block' if host is None else f'block {host}'}; the file would not run on the "
                f"device. Build on a host of the device's ISA (block 8: AVX2 without AVX-512F; 16: "
                f"AVX-512F), or unset ort.nchwc_block for a portable artifact")
        return []
    return ["NchwcTransformer"] if settings.portable_layout else []


@functools.lru_cache(maxsize=1)
def host_nchwc_block() -> int | None:
    """The NCHWc block ONNX Runtime's NchwcTransformer uses on this host (MlasNchwcGetBlockSize:
    8 with AVX2, 16 with AVX-512F), read off a one-Conv probe graph; None without NCHWc (ARM)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((8, 8, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    from ..graph import ort_optimized

    opt = ort_optimized(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), "all")
    inits = {i.name: i for i in opt.graph.initializer}
    for node in opt.graph.node:
        if node.domain == "com.microsoft.nchwc" and node.op_type == "Conv" and node.input[1] in inits:
            return int(inits[node.input[1]].dims[0])  # 8 output channels, padded up to the block
    return None


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
