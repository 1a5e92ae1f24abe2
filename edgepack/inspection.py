"""Describe an artifact: inputs/outputs, operator counts, size, and quantisation.

`.onnx` is read with onnx, `.ort` with the ORT flatbuffer schema that onnxruntime ships;
both report operator counts and the element types of every weight tensor, so anyone can
check what an "int8" file really contains.

`weight_bytes` is the stored payload of the constants: weights, biases and their
quantisation scales and zero points, counted once where a file shares them. It is what
quantisation shrinks; the rest of a file (operators, tensor names and shapes) is the same
graph in either precision and does not.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .errors import ModelError


def inspect_artifact(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"artifact {path} does not exist")
    inspector = _INSPECTORS.get(path.suffix.lower())
    if inspector is None:
        raise ModelError(f"{path}: cannot inspect '{path.suffix}' files; expected one of {', '.join(_INSPECTORS)}")
    return {"path": str(path), "size_bytes": path.stat().st_size, **inspector(path)}


def _inspect_onnx(path: Path) -> dict:
    from onnx import helper

    from .stages.graph import io_specs, load_onnx, op_counts

    model = load_onnx(path)
    inputs, outputs = io_specs(model)
    weight_types = Counter(np.dtype(helper.tensor_dtype_to_np_dtype(i.data_type)).name for i in model.graph.initializer)
    ops = op_counts(model)
    return {
        "format": "ONNX (opset "
                  f"{max((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), default='?')})",
        "inputs": [s.to_json() for s in inputs],
        "outputs": [s.to_json() for s in outputs],
        "op_counts": ops,
        "weight_dtypes": dict(weight_types),
        "weight_bytes": _onnx_weight_bytes(model),
        "quantization": _quant_summary(ops, weight_types),
    }


def weight_bytes(path: Path | str) -> int:
    """Bytes of constant payload in an .onnx, .ort or .tflite file (see the module doc)."""
    from .stages.graph import load_onnx

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_weight_bytes(load_onnx(path))
    if suffix == ".ort":
        return _ort_parse(path, lambda: _ort_weight_bytes(_ort_graph(path)[1].Model().Graph()))
    if suffix == ".tflite":
        return _tflite_weight_bytes(path)
    raise ModelError(f"{path}: cannot read weights of '{path.suffix}' files; expected one of {', '.join(_INSPECTORS)}")


def _onnx_weight_bytes(model) -> int:
    from onnx import helper

    return int(sum(int(np.prod(i.dims, dtype=np.int64))
                   * np.dtype(helper.tensor_dtype_to_np_dtype(i.data_type)).itemsize
                   for i in model.graph.initializer))


def _ort_graph(path: Path):
    from .ort_tools import ort_format_model

    ort_format_model()  # puts ort_flatbuffers_py on sys.path
    import ort_flatbuffers_py.fbs as fbs

    try:
        buf = bytearray(path.read_bytes())
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(buf) < 8 or not fbs.InferenceSession.InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0):
        raise ModelError(f"{path}: not an ORT format model (flatbuffer identifier missing)")
    return fbs, fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(buf, 0)


def _ort_parse(path: Path, read):
    """`read()`, which walks an .ort file's flatbuffer. The walk follows offsets stored in the
    file, so a truncated or damaged file fails anywhere in it (struct.error, IndexError,
    UnicodeDecodeError, ...): that is a ModelError naming the file and its format."""
    try:
        return read()
    except ModelError:
        raise
    except Exception:  # noqa: BLE001 - any failure of the walk is a damaged file
        raise ModelError(f"{path}: not a readable ORT-format model (truncated or damaged)") from None


def _ort_weight_bytes(graph) -> int:
    return sum(graph.Initializers(i).RawDataLength() for i in range(graph.InitializersLength()))


def _tflite_weight_bytes(path: Path) -> int:
    """Constant buffers plus the scale / zero-point vectors of constant tensors, each stored
    vector counted once (by its position in the file)."""
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    seen: dict = {}  # ("buffer", index) or a vector's position -> bytes
    for s in range(model.SubgraphsLength()):
        g = model.Subgraphs(s)
        for i in range(g.TensorsLength()):
            t = g.Tensors(i)
            data = model.Buffers(t.Buffer()).DataLength() if t.Buffer() else 0
            if not data:
                continue
            seen[("buffer", t.Buffer())] = data
            q = t.Quantization()
            if q is None:
                continue
            for slot, length, item in ((8, q.ScaleLength(), 4), (10, q.ZeroPointLength(), 8)):
                if length:
                    seen[q._tab.Vector(q._tab.Offset(slot))] = length * item
    return sum(seen.values())


def _inspect_ort(path: Path) -> dict:
    return _ort_parse(path, lambda: _read_ort(path))


def _read_ort(path: Path) -> dict:
    fbs, session = _ort_graph(path)
    model = session.Model()
    graph = model.Graph()
    ops: Counter = Counter()
    for i in range(graph.NodesLength()):
        node = graph.Nodes(i)
        domain = node.Domain().decode() if node.Domain() else ""
        op = node.OpType().decode()
        ops[op if domain in ("", "ai.onnx") else f"{domain}.{op}"] += 1
    type_names = {v: k for k, v in vars(fbs.TensorDataType.TensorDataType).items() if not k.startswith("_")}
    weight_types = Counter(type_names.get(graph.Initializers(i).DataType(), "?").lower()
                           for i in range(graph.InitializersLength()))
    weight_types = Counter({{"float": "float32", "double": "float64"}.get(k, k): v for k, v in weight_types.items()})
    from .verification.runtimes import RuntimeUnavailable, open_session

    try:
        s = open_session(path, 1)
    except RuntimeUnavailable as exc:
        raise ModelError(str(exc)) from None

    def spec(x):
        return {"name": x.name, "shape": list(x.shape), "dtype": x.dtype}

    return {
        "format": f"ORT flatbuffer (ORT format version {(session.OrtVersion() or b'?').decode()}; "
                  f"graph produced by {(model.ProducerName() or b'?').decode()})",
        "inputs": [spec(i) for i in s.inputs],
        "outputs": [spec(o) for o in s.outputs],
        "op_counts": dict(sorted(ops.items())),
        "weight_dtypes": dict(weight_types),
        "weight_bytes": _ort_weight_bytes(graph),
        "quantization": _quant_summary(dict(ops), weight_types),
    }


def _quant_summary(ops: dict, weight_types: Counter) -> str:
    int_ops = sum(v for k, v in ops.items() if k.startswith(("QLinear", "com.microsoft.QLinear")) or "Integer" in k)
    qdq = ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0)
    int_weights = sum(v for k, v in weight_types.items() if k in ("int8", "uint8"))
    if int_ops:
        return f"{int_ops} fused integer ops; {int_weights} int8/uint8 weight tensors"
    if qdq:
        return f"QDQ graph: {qdq} Quantize/DequantizeLinear nodes; {int_weights} int8/uint8 weight tensors"
    return "none (float)"


def _inspect_tflite(path: Path) -> dict:
    from ai_edge_litert.tools import flatbuffer_utils

    from .tflite.builder import OPERATOR_NAMES, TENSOR_TYPE_NAMES

    try:
        model = flatbuffer_utils.read_model(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not a readable TFLite flatbuffer ({exc})") from None
    g = model.subgraphs[0]
    ops: Counter = Counter()
    for op in g.operators:
        ops[OPERATOR_NAMES.get(model.operatorCodes[op.opcodeIndex].builtinCode, "CUSTOM")] += 1
    activation_types: Counter = Counter()
    weight_types: Counter = Counter()
    for t in g.tensors:
        tname = TENSOR_TYPE_NAMES.get(t.type, str(t.type)).lower()
        tname = {"float": "float32"}.get(tname, tname)
        if t.buffer and model.buffers[t.buffer].data is not None:
            weight_types[tname] += 1
        else:
            activation_types[tname] += 1

    def io(indices):
        out = []
        for i in indices:
            t = g.tensors[i]
            q = t.quantization
            scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else None
            zp = int(q.zeroPoint[0]) if scale is not None else None
            out.append({"name": t.name.decode() if isinstance(t.name, bytes) else t.name,
                        "shape": [int(d) for d in t.shape],
                        "dtype": {"float": "float32"}.get(TENSOR_TYPE_NAMES[t.type].lower(),
                                                          TENSOR_TYPE_NAMES[t.type].lower()),
                        "scale": scale, "zero_point": zp})
        return out

    float_compute = (sorted(k for k in ops if k not in ("QUANTIZE", "DEQUANTIZE"))
                     if activation_types.get("float32") else [])
    if activation_types.get("float32", 0) == 0 and (activation_types.get("int8") or activation_types.get("uint8")):
        quant = "full integer: every activation tensor is int8/uint8"
    elif weight_types.get("int8") and activation_types.get("float32"):
        quant = (f"mixed: {weight_types['int8']} int8 weight tensors, "
                 f"{activation_types['float32']} float32 activation tensors")
    elif weight_types.get("float16"):
        quant = "float16 weights, float32 activations"
    else:
        quant = "none (float)"
    return {
        "format": f"TFLite flatbuffer (schema v{model.version})",
        "inputs": io(g.inputs),
        "outputs": io(g.outputs),
        "op_counts": dict(sorted(ops.items())),
        "weight_dtypes": dict(weight_types),
        "weight_bytes": _tflite_weight_bytes(path),
        "tensor_dtypes": {"activations": dict(activation_types), "constants": dict(weight_types)},
        "quantization": quant,
        "float_ops": float_compute,
    }


_INSPECTORS = {".onnx": _inspect_onnx, ".ort": _inspect_ort, ".tflite": _inspect_tflite}


# Weight inputs quantisers store as int8: (op, input index) -> the output-channel axis of the
# tensor (None: per-tensor, as Gather tables are), for the per-channel scale count.
_WEIGHT_INPUTS = {("Conv", 1): 0, ("ConvTranspose", 1): 1, ("Gemm", 1): None, ("MatMul", 1): -1,
                  ("Gather", 0): None}
_BIAS_INPUTS = {("Conv", 2), ("ConvTranspose", 2), ("Gemm", 2)}


# Bytes of one zero point as each runtime's format stores it: ONNX keeps the int8/uint8 type
# of the data; the TFLite schema stores every zero point as int64.
ZERO_POINT_BYTES = {"onnxruntime": 1, "litert": 8}


def int8_floor_by_runtime(model) -> dict[str, int]:
    """`int8_floor_bytes(model)["bytes"]` for each runtime's zero-point width."""
    return {rt: int8_floor_bytes(model, zero_point_bytes=zp)["bytes"] for rt, zp in ZERO_POINT_BYTES.items()}


def int8_floor_bytes(model, zero_point_bytes: int = 1) -> dict:
    """The theoretical size of a model's constants in int8: 1 byte per weight of every
    Conv/ConvTranspose/Gemm/MatMul weight and Gather table, a 4-byte scale and a zero point
    (`zero_point_bytes`) per output channel (per tensor for Gather), int32 biases, and every other
    constant (norm parameters, small tensors) at its stored size.

    The int8 size gate divides an artifact's weight bytes by this: 1.0 is a fully quantised
    model whatever its size (a 24 k- and a 25 M-parameter model alike), and a weight that
    stayed float shows up as the ratio rising, where a ratio against the float file mostly
    measures how much of a small model is scales and biases."""
    from onnx import helper

    inits = {i.name: i for i in model.graph.initializer}
    role: dict[str, tuple] = {}
    for n in model.graph.node:
        for k, name in enumerate(n.input):
            if name not in inits:
                continue
            if (n.op_type, k) in _WEIGHT_INPUTS and len(inits[name].dims) >= 2:
                axis = _WEIGHT_INPUTS[(n.op_type, k)]
                if n.op_type == "Gemm":  # output channels: rows of B when transB, else its columns
                    axis = 0 if any(a.name == "transB" and a.i for a in n.attribute) else 1
                role.setdefault(name, ("weight", axis))
            elif (n.op_type, k) in _BIAS_INPUTS:
                role.setdefault(name, ("bias", None))
    weights = biases = other = params = 0
    for name, init in inits.items():
        count = int(np.prod(init.dims, dtype=np.int64))
        kind, axis = role.get(name, ("other", None))
        is_float = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).kind == "f"
        if kind == "weight" and is_float:
            channels = int(init.dims[axis]) if axis is not None else 1
            weights += count + channels * (4 + zero_point_bytes)
            params += count
        elif kind == "bias" and is_float:
            biases += count * 4
        else:
            other += count * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    return {"bytes": int(weights + biases + other), "weights": int(weights), "biases": int(biases),
            "other": int(other), "quantizable_parameters": int(params)}
