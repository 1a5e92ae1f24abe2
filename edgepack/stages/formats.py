"""Number formats beyond float32 / int8 QDQ, as ONNX graphs an ORT writer converts as they are.

Each function takes the cleaned float graph (and, where a format is calibrated, the
per-tensor ranges measured once on it) and writes one ONNX file:

- `float16_graph`: float16 weights and activations, float32 I/O (onnxruntime's converter).
  Ops the runtime has no float16 kernel for stay float32 between Casts, found by loading.
- `dynamic_int8_graph`: int8 weights, activations quantised at run time (MatMul-family
  ops; ONNX Runtime has no int8-weight ConvInteger kernel).
- `int16_qdq_graph`: "16x8": int16 activations, int8 weights, static QDQ (opset 21).
- `pot_qdq_graph`: static int8 QDQ with symmetric int8 activations and every scale a power
  of two (fixed-point, for integer-only accelerators that shift instead of multiply).
- `lowbit_graph`: research mode, binary {−α, +α} (XNOR-Net) or ternary {−α, 0, +α} (TWN)
  weights per output channel, stored as int8 codes with α in a DequantizeLinear.

No torch here: this runs wherever the quantise and emit stages run.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError, one_line

# ---------------------------------------------------------------------------------------
# float16

_NOT_IMPLEMENTED = re.compile(r"Could not find an implementation for (\w+)\(")


def float16_graph(float_path: Path, out_path: Path, source: str = "") -> tuple[Path, list[str]]:
    """fp16 weights and activations with float32 I/O; returns (path, op types that this
    machine's ONNX Runtime runs in float32).

    ONNX Runtime's CPU build has float16 kernels for some ops only (which, depends on the
    build and CPU: x86-64 builds have few). For an op without one, the runtime inserts
    Casts and runs the float32 kernel; the .ort keeps those Casts (see emit/ort.py), so the
    list names what computes in float32 on a runtime like this one. An op that cannot be
    loaded at all is kept float32 by the converter."""
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(float_path))
    blocked: list[str] = []
    for _ in range(64):
        with _quiet_logs():
            half = convert_float_to_float16(model, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST + blocked)
        onnx.save(half, str(out_path))
        with tempfile.TemporaryDirectory() as tmp:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            so.optimized_model_filepath = str(Path(tmp, "loaded.onnx"))
            try:
                ort.InferenceSession(str(out_path), so, providers=["CPUExecutionProvider"])
            except Exception as exc:
                m = _NOT_IMPLEMENTED.search(str(exc))
                if m is None or m[1] in blocked:
                    raise ModelError(f"{source or float_path}: the float16 graph does not load: "
                                     f"{one_line(exc)}") from None
                blocked.append(m[1])
                continue
            loaded = onnx.load(so.optimized_model_filepath)
        own = {n.output[0] for n in half.graph.node if n.op_type == "Cast"}
        inserted = {n.output[0] for n in loaded.graph.node if n.op_type == "Cast" and n.output[0] not in own}
        in_float32 = {n.op_type for n in loaded.graph.node
                      if n.op_type != "Cast" and any(i in inserted for i in n.input)}
        return Path(out_path), sorted(in_float32 | set(blocked))
    raise ModelError(f"{source or float_path}: too many ops without float16 kernels")


# ---------------------------------------------------------------------------------------
# dynamic-range int8

# ONNX Runtime's dynamic quantiser handles these; Conv would become ConvInteger, which the
# CPU build implements for uint8 weights only (int8 weights fail to load).
DYNAMIC_OP_TYPES = ("MatMul", "Attention", "LSTM", "Gather", "EmbedLayerNormalization")


def dynamic_int8_graph(float_path: Path, out_path: Path, *, per_channel: bool, reduce_range: bool,
                       source: str = "") -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet_logs():
            quantize_dynamic(str(float_path), str(out_path), op_types_to_quantize=list(DYNAMIC_OP_TYPES),
                             per_channel=per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8)
    except Exception as exc:
        raise ModelError(f"{source or float_path}: ONNX Runtime's dynamic quantiser failed: "
                         f"{type(exc).__name__}: {one_line(exc)}") from None
    model = onnx.load(str(out_path))
    if not any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QAttention",
                             "DynamicQuantizeLSTM") or n.op_type == "DequantizeLinear" for n in model.graph.node):
        raise ModelError(f"{source or float_path}: dynamic int8 quantises MatMul/Attention/LSTM/Gather weights; "
                         "this model has none (its Conv weights would need uint8 ConvInteger kernels)")
    return Path(out_path)


# ---------------------------------------------------------------------------------------
# static QDQ variants (int16 activations; power-of-two scales)

def _tensors_data(ranges: dict[str, tuple[float, float]], settings):
    """The measured ranges as ONNX Runtime's calibration record, labelled with the settings'
    method (its quantiser refuses a cache labelled with another method than it is given)."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    from .quantize import CALIBRATORS

    return TensorsData(CALIBRATORS[settings.calibration_method].ort_method(),
                       {n: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
                        for n, (lo, hi) in ranges.items()})


def int16_qdq_graph(float_path: Path, ranges: dict, settings, out_path: Path, source: str = "") -> Path:
    """16x8: int16 activations (symmetric, zero point 0, as TFLite's 16x8 mode) and int8
    weights, from the same calibrated ranges as the int8 graph. ONNX Runtime's quantiser
    moves the graph to opset 21 (DequantizeLinear on int16)."""
    from dataclasses import replace

    from .quantize import quantize_static

    s = replace(settings, activation_type="int16", symmetric_activations=True, reduce_range=False)
    return quantize_static(float_path, None, s, out_path, ranges=_tensors_data(ranges, s), source=source)


def pot_qdq_graph(float_path: Path, ranges: dict, settings, out_path: Path, source: str = "") -> tuple[Path, dict]:
    """Static int8 QDQ with symmetric int8 activations (zero point 0) and every scale a
    power of two, rounded up (2^ceil(log2 s)) so nothing that fit before clips. Weights are
    requantised from the float weights with their new scales; int32 biases get the scale
    input-scale x weight-scale the integer kernels assume. Returns (path, summary)."""
    from dataclasses import replace

    from .quantize import quantize_static

    s = replace(settings, activation_type="int8", symmetric_activations=True)
    quantize_static(float_path, None, s, out_path, ranges=_tensors_data(ranges, s), source=source)
    model = onnx.load(str(out_path))
    floats = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(float_path)).graph.initializer}
    summary = to_power_of_two_scales(model, floats)
    onnx.save(model, str(out_path))
    return Path(out_path), summary


def pot(scale: np.ndarray) -> np.ndarray:
    """Each scale rounded up to a power of two."""
    s = np.asarray(scale, np.float64)
    return np.where(s > 0, np.exp2(np.ceil(np.log2(np.where(s > 0, s, 1.0)))), 1.0).astype(np.float32)


def to_power_of_two_scales(model: onnx.ModelProto, float_weights: dict[str, np.ndarray]) -> dict:
    """Rewrite a QDQ model in place so every Q/DQ scale is 2^k (see `pot_qdq_graph`)."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for n in qdq:
        if n.input[1] not in inits:
            raise ModelError(f"node {n.name!r}: scale {n.input[1]!r} is not an initializer; cannot rewrite it")

    def arr(name):
        return numpy_helper.to_array(inits[name])

    def put(name, value):
        inits[name].CopyFrom(numpy_helper.from_array(value, name))

    const_dq = [n for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    int32_dq = {n.output[0]: n for n in const_dq if inits[n.input[0]].data_type == TensorProto.INT32}
    weight_dq = [n for n in const_dq if n.output[0] not in int32_dq]
    weight_scales = {n.input[1] for n in weight_dq}
    # activations: every other scale, rounded up; zero points must be 0 (symmetric int8)
    act_scales = {n.input[1] for n in qdq} - weight_scales - {n.input[1] for n in int32_dq.values()}
    for name in act_scales:
        put(name, pot(arr(name)))
    for n in qdq:
        if n.input[1] in act_scales and len(n.input) > 2 and n.input[2]:
            if np.any(arr(n.input[2]) != 0):
                raise ModelError(f"node {n.name!r}: activation zero point is not 0; power-of-two scales need "
                                 "symmetric int8 activations")
    # weights: new scale, values requantised from the float weights (or the dequantised ones)
    requantised = 0
    for n in weight_dq:
        q, scale = arr(n.input[0]), arr(n.input[1])
        zp = arr(n.input[2]) if len(n.input) > 2 and n.input[2] else np.zeros_like(scale, dtype=q.dtype)
        axis = _axis(n, q.ndim) if scale.ndim else None
        shape = [1] * q.ndim
        if axis is not None:
            shape[axis] = -1
        w = float_weights.get(_float_name(n.input[0]))
        if w is None or w.shape != q.shape:
            w = (q.astype(np.float32) - zp.reshape(shape)) * scale.reshape(shape)
        else:
            requantised += 1
        new = pot(scale)
        info = np.iinfo(q.dtype)
        q2 = np.clip(np.round(w / new.reshape(shape)) + zp.reshape(shape), info.min, info.max).astype(q.dtype)
        put(n.input[0], q2)
        put(n.input[1], new)
    # int32 biases: scale = (input scale) x (weight scale), both now powers of two
    for out, n in int32_dq.items():
        consumer = next((c for c in g.node if out in c.input), None)
        q, scale = arr(n.input[0]), arr(n.input[1])
        b = q.astype(np.float64) * scale.astype(np.float64)
        feeding = [producers.get(i) for i in consumer.input[:2]] if consumer is not None else []
        if len(feeding) == 2 and all(p is not None and p.op_type == "DequantizeLinear" for p in feeding):
            new = arr(feeding[0].input[1]).astype(np.float64) * arr(feeding[1].input[1]).astype(np.float64)
        else:
            new = pot(scale).astype(np.float64)
        new = np.broadcast_to(new, scale.shape).astype(np.float32)
        put(n.input[0], np.clip(np.round(b / new), -2**31, 2**31 - 1).astype(np.int32))
        put(n.input[1], new)
    scales = [arr(n.input[1]) for n in qdq]
    return {"scales": int(sum(s.size for s in scales)), "weight_tensors": len(weight_dq),
            "weights_requantised_from_float": requantised, "biases": len(int32_dq),
            "min_exponent": int(min(np.log2(s).min() for s in scales)) if scales else None,
            "max_exponent": int(max(np.log2(s).max() for s in scales)) if scales else None}


def _float_name(quantized: str) -> str:
    return quantized[:-len("_quantized")] if quantized.endswith("_quantized") else quantized


def _axis(node, ndim: int) -> int:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    return axis % ndim


def all_scales_power_of_two(model: onnx.ModelProto) -> bool:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            s = inits[n.input[1]].astype(np.float64)
            if not np.all(np.exp2(np.round(np.log2(s))) == s):
                return False
    return True


# ---------------------------------------------------------------------------------------
# binary / ternary weights (research mode)

LOWBIT_BITS = {"binary": 1, "ternary": 2}
TWN_THRESHOLD = 0.7  # Δ = 0.7 · mean|w| (Li & Liu, Ternary Weight Networks)


def lowbit_codes(w: np.ndarray, axis: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes in {−1, +1} or {−1, 0, +1}, α per channel along `axis`)."""
    moved = np.moveaxis(np.asarray(w, np.float32), axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    a = np.abs(flat)
    if mode == "binary":
        alpha = a.mean(axis=1)
        codes = np.where(flat >= 0, 1, -1)
    elif mode == "ternary":
        delta = TWN_THRESHOLD * a.mean(axis=1, keepdims=True)
        keep = a > delta
        alpha = np.where(keep.any(axis=1), (a * keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1), 0.0)
        codes = np.sign(flat) * keep
    else:
        raise ValueError(mode)
    codes = np.moveaxis(codes.reshape(moved.shape), 0, axis).astype(np.int8)
    return codes, alpha.astype(np.float32)


def _weight_axis(node, inits) -> int | None:
    """Output-channel axis of the node's constant weight (input 1), or None to leave it."""
    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    w = inits[node.input[1]]
    if w.data_type != TensorProto.FLOAT or len(w.dims) < 2:
        return None
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
    if node.op_type == "MatMul":
        return len(w.dims) - 1
    return None


def lowbit_graph(float_path: Path, out_path: Path, mode: str, source: str = "") -> tuple[Path, dict]:
    """Binary or ternary weights for every Conv/Gemm/MatMul with a constant float weight of
    rank >= 2, per output channel; activations stay float. Returns (path, summary): tensors
    and weights converted, their int8 bytes and what they would take bit-packed."""
    model = onnx.load(str(float_path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    done: dict[str, str] = {}
    n_weights = n_channels = 0
    new_nodes = []
    for n in g.node:
        axis = _weight_axis(n, inits)
        if axis is not None and n.input[1] not in done:
            name = n.input[1]
            w = numpy_helper.to_array(inits[name])
            codes, alpha = lowbit_codes(w, axis, mode)
            q, s, z, out = f"{name}_{mode}", f"{name}_{mode}_alpha", f"{name}_{mode}_zp", f"{name}_{mode}_dq"
            g.initializer.extend([numpy_helper.from_array(codes, q), numpy_helper.from_array(alpha, s),
                                  numpy_helper.from_array(np.zeros(alpha.shape, np.int8), z)])
            new_nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [out], name=out, axis=axis))
            done[name] = out
            n_weights += w.size
            n_channels += alpha.size
        if axis is not None:
            n.input[1] = done[n.input[1]]
    for name in done:  # the float originals, unless something else still reads them
        if not any(name in n.input for n in g.node):
            g.initializer.remove(inits[name])
    if not done:
        raise ModelError(f"{source or float_path}: no Conv/Gemm/MatMul with a constant weight of rank >= 2 "
                         f"to make {mode}")
    # the DequantizeLinear nodes read initializers only: first in the graph, before any reader
    nodes = new_nodes + [onnx.NodeProto.FromString(n.SerializeToString()) for n in g.node]
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(out_path))
    bits = LOWBIT_BITS[mode]
    other = sum(numpy_helper.to_array(i).nbytes for i in g.initializer
                if not any(i.name.startswith(f"{w}_{mode}") for w in done))
    packed = -(-n_weights * bits // 8) + 4 * n_channels
    return Path(out_path), {"tensors": len(done), "weights": int(n_weights), "channels": int(n_channels),
                            "int8_weight_bytes": int(n_weights + 4 * n_channels),
                            "bitpacked_weight_bytes": int(packed), "bits_per_weight": bits,
                            "other_constant_bytes": int(other)}


@contextlib.contextmanager
def _quiet_logs():
    """The quantiser's logging and prints, silenced (see quantize._quiet)."""
    from .quantize import _quiet

    with contextlib.redirect_stdout(io.StringIO()), _quiet():
        yield


__all__ = ["float16_graph", "dynamic_int8_graph", "int16_qdq_graph", "pot_qdq_graph", "lowbit_graph", "pot",
           "all_scales_power_of_two", "lowbit_codes"]
