"""Describe an artifact: inputs/outputs, operator counts, size, and quantisation.

`.onnx` is read with onnx, `.ort` with the ORT flatbuffer schema that onnxruntime ships;
both report operator counts and the element types of every weight tensor, so anyone can
check what an "int8" file really contains.
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

    from .graph import io_specs, load_onnx, op_counts

    model = load_onnx(path)
    inputs, outputs = io_specs(model)
    weight_types = Counter(np.dtype(helper.tensor_dtype_to_np_dtype(i.data_type)).name for i in model.graph.initializer)
    ops = op_counts(model)
    return {
        "format": f"ONNX (opset {max((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), default='?')})",
        "inputs": [s.to_json() for s in inputs],
        "outputs": [s.to_json() for s in outputs],
        "op_counts": ops,
        "weight_dtypes": dict(weight_types),
        "quantization": _quant_summary(ops, weight_types),
    }


def _inspect_ort(path: Path) -> dict:
    import onnxruntime.tools.ort_format_model  # noqa: F401  (puts ort_flatbuffers_py on sys.path)
    import ort_flatbuffers_py.fbs as fbs

    buf = bytearray(path.read_bytes())
    if not fbs.InferenceSession.InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0):
        raise ModelError(f"{path}: not an ORT format model (flatbuffer identifier missing)")
    model = fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(buf, 0).Model()
    graph = model.Graph()
    ops: Counter = Counter()
    for i in range(graph.NodesLength()):
        node = graph.Nodes(i)
        domain = node.Domain().decode() if node.Domain() else ""
        op = node.OpType().decode()
        ops[op if domain in ("", "ai.onnx") else f"{domain}.{op}"] += 1
    type_names = {v: k for k, v in vars(fbs.TensorDataType.TensorDataType).items() if not k.startswith("_")}
    weight_types = Counter(type_names.get(graph.Initializers(i).DataType(), "?").lower() for i in range(graph.InitializersLength()))
    weight_types = Counter({{"float": "float32", "double": "float64"}.get(k, k): v for k, v in weight_types.items()})
    from .runtimes import open_session

    s = open_session(path, 1)
    spec = lambda x: {"name": x.name, "shape": list(x.shape), "dtype": x.dtype}
    return {
        "format": f"ORT flatbuffer (ORT version {model.ProducerName().decode() if model.ProducerName() else '?'})",
        "inputs": [spec(i) for i in s.inputs],
        "outputs": [spec(o) for o in s.outputs],
        "op_counts": dict(sorted(ops.items())),
        "weight_dtypes": dict(weight_types),
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


_INSPECTORS = {".onnx": _inspect_onnx, ".ort": _inspect_ort}
