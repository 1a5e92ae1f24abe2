"""The float graph: load an ONNX file, pin static shapes, clean it, and describe its I/O.

Cleaning = ONNX shape inference, then ONNX Runtime's basic (platform-independent) graph
optimisations saved back as standard ONNX — constant folding, BatchNorm folded into the
preceding Conv, redundant-node removal — then shape inference again and the ONNX checker.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..errors import ModelError, one_line


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def _elem_dtype(elem_type: int) -> str:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def load_onnx(path: Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise ModelError(f"{path}: ONNX graph has no nodes")
    return model


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (old exporters list both)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    out = []
    for d in vi.type.tensor_type.shape.dim:
        # Some exporters write -1 (or 0) for a dynamic dimension: that is not a size.
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(d.dim_value)
        elif d.HasField("dim_value"):
            out.append("?")
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def fix_input_shapes(model: onnx.ModelProto, source: str, override=None) -> None:
    """Make every graph input static. `override` fixes shapes: a tuple for a single-input
    graph, or a dict input name -> shape; a dim that is not a positive number (`-1`, `?`, a
    symbol) is dynamic and must be fixed, a static dim must not be contradicted."""
    inputs = graph_inputs(model)
    if override is not None and not isinstance(override, dict):
        if len(inputs) != 1:
            raise ModelError(
                f"{source}: one input_shape given but the graph has {len(inputs)} inputs "
                f"({', '.join(i.name for i in inputs)}); give one per input, e.g. "
                f"--input-shape {inputs[0].name}=1,64 or [model.inputs.{inputs[0].name}] shape"
            )
        override = {inputs[0].name: tuple(override)}
    override = dict(override or {})
    unknown = [n for n in override if n not in {i.name for i in inputs}]
    if unknown:
        raise ModelError(f"{source}: input_shape given for {', '.join(map(repr, unknown))}, which the graph does "
                         f"not have (inputs: {', '.join(i.name for i in inputs)})")
    for vi in inputs:
        dims = _dims(vi)
        want = override.get(vi.name)
        if want is not None:
            if len(want) != len(dims):
                raise ModelError(
                    f"{source}: input '{vi.name}' has rank {len(dims)} ({dims}) but "
                    f"input_shape {list(want)} has rank {len(want)}"
                )
            for have, w in zip(dims, want):
                if isinstance(have, int) and have != w:
                    raise ModelError(
                        f"{source}: input '{vi.name}' has static shape {dims}; "
                        f"input_shape {list(want)} contradicts it"
                    )
            shape = vi.type.tensor_type.shape
            for d, v in zip(shape.dim, want):
                d.Clear()
                d.dim_value = v
        elif any(not isinstance(d, int) for d in dims):
            hint = (f"--input-shape {vi.name}=..." if len(inputs) > 1 else "--input-shape")
            raise ModelError(
                f"{source}: input '{vi.name}' has dynamic shape {dims}; "
                f"give a static shape with [model] input_shape / [model.inputs.{vi.name}] shape or {hint}"
            )
    _forget_symbolic_shapes(model.graph)


# metadata_props key of the float graph: the dims the source graph declared for its inputs and
# outputs, recorded before `fix_input_shapes` pins them (only when some input dim was dynamic).
DECLARED_DIMS_KEY = "edgepack.declared_dims"


def _declared(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    """A value's dims as written: a positive size, a symbol, or None (-1, 0 or nothing)."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0
            else (d.dim_param if d.HasField("dim_param") and d.dim_param else None)
            for d in vi.type.tensor_type.shape.dim]


def record_declared_dims(model: onnx.ModelProto) -> None:
    """Keep the source graph's declared input and output dims in `model`'s metadata (key
    `DECLARED_DIMS_KEY`, JSON) when some input dim is not a fixed size, so a writer can give
    them back after the graph was pinned to the calibration shape (emit/ort.py, layout_at_load)."""
    inputs = graph_inputs(model)
    if all(isinstance(d, int) for vi in inputs for d in _dims(vi)):
        return
    value = json.dumps({"inputs": {vi.name: _declared(vi) for vi in inputs},
                        "outputs": {vi.name: _declared(vi) for vi in model.graph.output}}, sort_keys=True)
    props = [p for p in model.metadata_props if p.key != DECLARED_DIMS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.add(key=DECLARED_DIMS_KEY, value=value)


def declared_dims(model: onnx.ModelProto) -> dict | None:
    """{"inputs"|"outputs": {name: dims}} recorded by `record_declared_dims`, or None."""
    for p in model.metadata_props:
        if p.key == DECLARED_DIMS_KEY:
            try:
                return json.loads(p.value)
            except ValueError:
                return None
    return None


def _forget_symbolic_shapes(graph: onnx.GraphProto) -> None:
    """Output and intermediate shapes that were symbolic must be re-inferred from the now
    static inputs, in control-flow branches (If, Loop, Scan bodies) too: inference keeps a
    branch output's declared symbol, and an If's output takes its branches' shapes."""
    del graph.value_info[:]
    for out in graph.output:
        for d in out.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.Clear()
    for node in graph.node:
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                _forget_symbolic_shapes(sub)


def _ort_basic_optimize(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.onnx"), Path(tmp, "out.onnx")
        onnx.save(model, str(src))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(dst)
        so.log_severity_level = 3
        try:
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"{source}: ONNX Runtime cannot load the graph: {one_line(exc)}") from None
        return onnx.load(str(dst))


# Per-channel QuantizeLinear/DequantizeLinear (the `axis` attribute) needs opset 13.
MIN_OPSET = 13


def _at_least_opset(model: onnx.ModelProto, source: str, opset: int) -> onnx.ModelProto:
    current = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=opset)
    if current >= opset:
        return model
    try:
        from onnx import version_converter

        return version_converter.convert_version(model, opset)
    except Exception as exc:
        raise ModelError(f"{source}: opset {current} graph could not be upgraded to opset {opset} "
                         f"(needed for per-channel int8): {one_line(exc)}") from None


def clean_float_graph(model: onnx.ModelProto, source: str, input_shape=None) -> onnx.ModelProto:
    """Static shapes, shape inference, constant folding, BN folding, checker."""
    refuse_non_finite_weights(model, source)
    record_declared_dims(model)
    fix_input_shapes(model, source, input_shape)
    model = _at_least_opset(model, source, MIN_OPSET)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        raise ModelError(f"{source}: shape inference failed: {one_line(exc)}") from None
    model = _ort_basic_optimize(model, source)
    model = onnx.shape_inference.infer_shapes(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{source}: ONNX checker rejected the cleaned graph: {one_line(exc)}") from None
    for vi in graph_inputs(model):
        if any(not isinstance(d, int) for d in _dims(vi)):
            raise ModelError(f"{source}: '{vi.name}' still has a dynamic shape {_dims(vi)} after cleaning")
    # An output may stay dynamic with static inputs: an If on an input's value (a sample rate)
    # whose branches differ. `pin_output_shapes` fixes it from a real run on the data.
    return name_nodes(model)


# Operators whose weights (and BatchNorm statistics) must be finite: ±inf elsewhere may be
# meant (an attention mask's fill value), NaN never is.
_WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization", "PRelu")


def refuse_non_finite_weights(model: onnx.ModelProto, source: str) -> None:
    """ModelError naming the first initializer holding NaN (or ±inf in a weight, bias or
    normalisation input): such a model cannot be quantised or verified, and the quantiser's
    own refusal ("scale issue") would not say why."""
    from onnx import numpy_helper

    weighted = {name for n in model.graph.node if n.op_type in _WEIGHTED_OPS for name in n.input}
    for init in model.graph.initializer:
        if helper.tensor_dtype_to_np_dtype(init.data_type).kind != "f":
            continue
        try:
            values = numpy_helper.to_array(init)
        except Exception:  # noqa: BLE001 - external data the loader could not read is refused elsewhere
            continue
        nan = int(np.isnan(values).sum())
        inf = int(np.isinf(values).sum()) if init.name in weighted else 0
        if nan or inf:
            what = " and ".join(w for w in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if w)
            raise ModelError(f"{source}: weight tensor '{init.name}' holds {what} value(s) of {values.size}; "
                             "a model with non-finite weights cannot be quantised or verified (check its training "
                             "or export)")


def dynamic_outputs(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output if any(not isinstance(d, int) for d in _dims(o))]


def pin_output_shapes(model: onnx.ModelProto, feed: dict, source: str) -> onnx.ModelProto:
    """Give outputs that shape inference left dynamic the shapes one real call produces
    (`feed`: one model call's inputs by name, from the calibration data)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        values = session.run(None, {k: np.asarray(v) for k, v in feed.items()})
    except Exception as exc:
        raise ModelError(f"{source}: running the cleaned graph on the first calibration sample failed: "
                         f"{one_line(exc)}") from None
    for out, value in zip(model.graph.output, values):
        dims = out.type.tensor_type.shape.dim
        if len(dims) != value.ndim:
            del dims[:]
            for _ in range(value.ndim):
                dims.add()
        for d, n in zip(dims, value.shape):
            d.Clear()
            d.dim_value = int(n)
    return model


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed node a unique name (quantisers and reports refer to nodes by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)
    return model


def _spec(vi) -> TensorSpec:
    return TensorSpec(vi.name, tuple(int(d) for d in _dims(vi)), _elem_dtype(vi.type.tensor_type.elem_type))


def input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [_spec(v) for v in graph_inputs(model)]


def io_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return input_specs(model), [_spec(v) for v in model.graph.output]


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def parameter_count(model: onnx.ModelProto) -> int:
    return int(sum(np.prod(i.dims, dtype=np.int64) for i in model.graph.initializer))


def ort_optimized(model: onnx.ModelProto, level: str = "extended", config: dict[str, str] | None = None,
                  disabled: list[str] | None = None) -> onnx.ModelProto:
    """`model` as ONNX Runtime's CPU provider optimises it at `level` ("basic", "extended",
    "all"), read back as an ONNX graph: what its kernels will run on this host."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    with tempfile.TemporaryDirectory(prefix="edgepack-opt-") as tmp:
        src, out = Path(tmp) / "model.onnx", Path(tmp) / "optimized.onnx"
        onnx.save(model, str(src))
        so = ort.SessionOptions()
        so.graph_optimization_level = levels[level]
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3
        for k, v in (config or {}).items():
            so.add_session_config_entry(k, v)
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        return onnx.load(str(out))
