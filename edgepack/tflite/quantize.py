"""TFLite precision variants of a float32 TFLite model.

- float16: float constants stored as float16, widened by DEQUANTIZE ops at load
  (what TFLite's own float16 post-training quantisation does); constants beyond float16's
  range (attention-mask biases like float32's minimum) stay float32.
- dynamic-range int8: convolution / fully-connected weights stored as symmetric int8, per
  output channel (fully-connected included: FULLY_CONNECTED version 12, the per-channel
  hybrid kernel); activations stay float and the kernels quantise them on the fly (per
  row, asymmetric, for fully-connected). Not an integer model; named "dynamic-int8" so
  nobody mistakes it. Per-channel fully-connected weights, measured on all-MiniLM-L6-v2
  (48 sentences, 2 threads, LiteRT on x86-64): cosine to float 0.9988 (min 0.9976) at 0.48x
  the float32 model's p50; one scale per weight matrix gave 0.9703 (min 0.9470).
- full-integer int8: LiteRT's own post-training quantiser (the calibration wrapper that
  ai-edge-litert ships) calibrated on edgepack's calibration samples; every op runs in
  int8 (or, for ops LiteRT cannot quantise, stays float and is reported) and, by
  configuration, the model's float I/O is int8/uint8 or float32; integer I/O stays as is.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from ..errors import ModelError, one_line
from . import fallback
from .builder import TFLITE_FILE_IDENTIFIER

BOP = schema.BuiltinOperator
# Weights smaller than this stay float in dynamic-range mode (as in TFLite's converter).
DYNAMIC_MIN_ELEMENTS = 1024
# op version of a hybrid (float activations, int8 weights) op: (per-tensor, per-channel);
# fully-connected per-tensor with asymmetric input quantisation is 9
_HYBRID_VERSION = {BOP.CONV_2D: (2, 5), BOP.DEPTHWISE_CONV_2D: (4, 6), BOP.FULLY_CONNECTED: (9, 12)}


def _load(model_bytes: bytes):
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))


def _save(model) -> bytes:
    b = _SharingBuilder(1024)
    b.Finish(model.Pack(b), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(b.Output())


class _SharingBuilder(flatbuffers.Builder):
    """Writes each distinct numeric vector once and lets every table that holds an equal
    one point at it (flatbuffers allow shared sub-objects). LiteRT's quantiser gives every
    per-channel tensor its own int64 zero-point vector, all zeros; on a pruned MobileNetV2
    these copies were 15 % of the int8 file. Weight buffers (uint8) are never merged, so
    each tensor keeps its own buffer as the format expects."""

    def __init__(self, size: int):
        super().__init__(size)
        self._vectors: dict[tuple[str, bytes], int] = {}

    def CreateNumpyVector(self, x):
        if x.dtype == np.uint8:
            return super().CreateNumpyVector(x)
        key = (x.dtype.str, x.tobytes())
        if key not in self._vectors:
            self._vectors[key] = super().CreateNumpyVector(x)
        return self._vectors[key]


def _drop_weight_ranges(model) -> None:
    """LiteRT's quantiser leaves the float min/max of every constant it quantised (per
    channel, as float arrays) in the file; no kernel reads them, so they go. Activation
    ranges (one value each) stay: they document the calibration."""
    for g in model.subgraphs:
        for t in g.tensors:
            q = t.quantization
            if q is not None and model.buffers[t.buffer].data is not None:
                q.min = q.max = None


def _opcode_index(model, builtin: int) -> int:
    for i, c in enumerate(model.operatorCodes):
        if c.builtinCode == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _buffer_array(model, tensor, dtype) -> np.ndarray:
    data = model.buffers[tensor.buffer].data
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype=dtype).reshape(tensor.shape)


def to_float16(model_bytes: bytes) -> bytes:
    model = _load(model_bytes)
    g = model.subgraphs[0]
    deq = _opcode_index(model, BOP.DEQUANTIZE)
    new_ops = []
    for i, t in enumerate(list(g.tensors)):
        if t.type != schema.TensorType.FLOAT32 or not t.buffer or model.buffers[t.buffer].data is None:
            continue
        full = _buffer_array(model, t, np.float32)
        if np.any(np.abs(full[np.isfinite(full)]) > np.finfo(np.float16).max):
            continue  # e.g. a mask's float-min bias: -inf in float16 would turn 0 · bias into NaN
        half = full.astype(np.float16)
        t16 = schema.TensorT()
        t16.name = (t.name.decode() if isinstance(t.name, bytes) else t.name) + "_fp16"
        t16.shape, t16.type = t.shape, schema.TensorType.FLOAT16
        buf = schema.BufferT()
        buf.data = np.frombuffer(half.tobytes(), np.uint8)
        model.buffers[t.buffer] = buf  # reuse the float32 buffer slot for the float16 data
        t16.buffer, t.buffer = t.buffer, 0
        g.tensors.append(t16)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = (deq, np.asarray([len(g.tensors) - 1], np.int32),
                                                 np.asarray([i], np.int32))
        new_ops.append(op)
    g.operators = new_ops + list(g.operators)
    return _save(model)


def to_dynamic_range_int8(model_bytes: bytes) -> bytes:
    model = _load(model_bytes)
    g = model.subgraphs[0]
    # the weight input's output-channel axis: OHWI conv, 1HWO depthwise, [out, in] fully-connected
    weight_slot = {BOP.CONV_2D: 0, BOP.DEPTHWISE_CONV_2D: 3, BOP.FULLY_CONNECTED: 0}
    done: set[int] = set()
    for op in g.operators:
        code = model.operatorCodes[op.opcodeIndex].builtinCode
        if code not in weight_slot or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        t = g.tensors[op.inputs[1]]
        if int(op.inputs[1]) not in done:  # a weight shared by several ops (an unrolled RNN) is quantised once
            if t.type != schema.TensorType.FLOAT32 or not t.buffer or int(np.prod(t.shape)) < DYNAMIC_MIN_ELEMENTS:
                continue
            w = _buffer_array(model, t, np.float32)
            axis = weight_slot[code]
            reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
            amax = np.max(np.abs(w), axis=reduce_axes, keepdims=True)
            scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            buf = schema.BufferT()
            buf.data = np.frombuffer(q.tobytes(), np.uint8)
            model.buffers[t.buffer] = buf
            t.type = schema.TensorType.INT8
            qp = schema.QuantizationParametersT()
            qp.scale = scale.reshape(-1).tolist()
            qp.zeroPoint = [0] * len(qp.scale)
            qp.quantizedDimension = axis
            t.quantization = qp
            done.add(int(op.inputs[1]))
        # every op reading a quantised weight runs the hybrid kernel: give each its options
        opcode = model.operatorCodes[op.opcodeIndex]
        if code == BOP.FULLY_CONNECTED:
            if op.builtinOptions is None:
                op.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
                op.builtinOptions = schema.FullyConnectedOptionsT()
            op.builtinOptions.asymmetricQuantizeInputs = True
        # the hybrid kernels' op versions (TFLite's op_version rules): a per-channel hybrid op
        # declares the version that reads one scale per channel, so an older runtime refuses
        # the file instead of misreading it
        per_channel = len(t.quantization.scale) > 1
        opcode.version = max(opcode.version, _HYBRID_VERSION[code][per_channel])
    _int8_lookup_tables(model)
    return _save(model)


def _int8_lookup_tables(model) -> None:
    """Embedding tables read only by GATHER ops are stored int8 (symmetric, one scale: the
    gathered rows share the output tensor's parameters); each GATHER then runs on int8
    (version 2) and a DEQUANTIZE widens its output. A token-embedding table is often the
    largest weight of a transformer (all-MiniLM-L6-v2: 11.7 M of 22.7 M parameters), which
    a float table would keep at 4 bytes each."""
    g = model.subgraphs[0]
    readers: dict[int, list] = {}
    for op in g.operators:
        for k, i in enumerate(op.inputs):
            if i >= 0:
                readers.setdefault(int(i), []).append((op, k))
    gather = [op for op in g.operators if model.operatorCodes[op.opcodeIndex].builtinCode == BOP.GATHER]
    tables = {int(op.inputs[0]) for op in gather}
    quantised = set()
    for i in tables:
        t = g.tensors[i]
        if (t.type != schema.TensorType.FLOAT32 or not t.buffer or model.buffers[t.buffer].data is None
                or int(np.prod(t.shape)) < DYNAMIC_MIN_ELEMENTS
                or any(model.operatorCodes[op.opcodeIndex].builtinCode != BOP.GATHER or k != 0
                       for op, k in readers[i])):
            continue
        w = _buffer_array(model, t, np.float32)
        amax = float(np.max(np.abs(w)))
        scale = amax / 127.0 if amax > 0 else 1.0
        buf = schema.BufferT()
        buf.data = np.frombuffer(np.clip(np.round(w / scale), -127, 127).astype(np.int8).tobytes(), np.uint8)
        model.buffers[t.buffer] = buf
        t.type = schema.TensorType.INT8
        t.quantization = schema.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [scale], [0]
        quantised.add(i)
    if not quantised:
        return
    deq = _opcode_index(model, BOP.DEQUANTIZE)
    model.operatorCodes[deq].version = max(model.operatorCodes[deq].version, 2)
    ops = []
    for op in g.operators:
        ops.append(op)
        if op not in gather or int(op.inputs[0]) not in quantised:
            continue
        model.operatorCodes[op.opcodeIndex].version = max(model.operatorCodes[op.opcodeIndex].version, 2)
        out = g.tensors[op.outputs[0]]
        q = schema.TensorT()
        q.name = (out.name.decode() if isinstance(out.name, bytes) else out.name) + "_int8"
        q.shape, q.type, q.buffer = out.shape, schema.TensorType.INT8, 0
        q.shapeSignature = out.shapeSignature
        q.quantization = schema.QuantizationParametersT()
        table = g.tensors[op.inputs[0]].quantization
        q.quantization.scale, q.quantization.zeroPoint = list(table.scale), [0]
        g.tensors.append(q)
        widen = schema.OperatorT()
        widen.opcodeIndex, widen.inputs = deq, np.asarray([len(g.tensors) - 1], np.int32)
        widen.outputs = np.asarray([op.outputs[0]], np.int32)
        op.outputs = np.asarray([len(g.tensors) - 1], np.int32)
        ops.append(widen)
    g.operators = ops


def to_full_int8(model_bytes: bytes, samples, io_type: str = "int8", progress=None,
                 ranges: dict[str, tuple[float, float]] | None = None) -> bytes:
    """`quantize_full_int8` without the list of ops left in float."""
    return quantize_full_int8(model_bytes, samples, io_type, progress, ranges)[0]


def quantize_full_int8(model_bytes: bytes, samples, io_type: str = "int8", progress=None,
                       ranges: dict[str, tuple[float, float]] | None = None,
                       activations: str = "int8") -> tuple[bytes, list[str]]:
    """Full-integer quantisation by LiteRT's own quantiser; returns (model, float ops).

    `ranges` maps tensor names to the (min, max) edgepack's calibration measured on the
    float ONNX graph; they are attached to the TFLite tensors (see calibration.py) and
    only tensors they cannot cover are measured here on `samples`: per model call either
    one array (single-input models) or a dict input name -> array, in the TFLite input
    layout. Without `ranges` every tensor is measured on `samples`. Masked attention
    scores get ranges without the mask's huge bias, and SUMs become MEAN·n, before
    LiteRT quantises (see calibration.tame_softmax_inputs, fallback.sum_as_mean).

    `io_type` applies to floating-point inputs and outputs; integer inputs (token ids,
    masks) keep their type. When LiteRT's quantiser refuses some op in int8 (e.g. DIV,
    POW, CAST to float), the model is quantised again with those ops left in float
    between QUANTIZE/DEQUANTIZE (see fallback.py); the second value names them (TFLite op
    names, sorted; empty when every op is integer).

    `activations="int16"` is TFLite's 16x8 mode: int16 activations (symmetric), int8
    weights, int64 biases; its I/O is float32 or int16, so `io_type` must be "float32".
    """
    from .calibration import assign_ranges, measure_ranges, set_ranges, tame_softmax_inputs

    model = _load(model_bytes)
    missing = assign_ranges(model, ranges or {})
    if missing:
        samples = list(samples)
        if not samples:
            raise ModelError("full-integer TFLite quantisation needs calibration samples; got none")
        set_ranges(model, measure_ranges(model_bytes, missing, _with_progress(samples, progress)))
    tame_softmax_inputs(model)
    fallback.sum_as_mean(model, _opcode_index)
    io_dtype = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32}[io_type]
    if activations == "int16" and io_dtype != np.float32:
        raise ModelError(f"16x8 TFLite quantisation takes float32 I/O, not {io_type}")
    g = model.subgraphs[0]
    in_shapes = [[int(d) for d in g.tensors[i].shape] for i in g.inputs]
    # The wrapper keeps a raw pointer into the flatbuffer: hold the bytes until done.
    flatbuffer = _save(model)
    # Strictly integer first; then with float fallback for the ops LiteRT refuses, with the
    # requested I/O type, else float I/O at the quantiser and the type restored here.
    attempts = [(io_dtype, io_dtype, False), (io_dtype, io_dtype, True)]
    if io_dtype != np.float32:
        attempts += [(io_dtype, np.float32, True), (np.float32, np.float32, True)]
    errors = []
    for in_type, out_type, allow_float in attempts:
        try:
            quantized = _quantize(flatbuffer, in_shapes, in_type, out_type, allow_float, activations)
            break
        except Exception as exc:
            errors.append(exc)
    else:
        raise ModelError(f"LiteRT's full-integer quantiser rejected the model: {one_line(errors[0])}") from None
    model = _load(quantized)
    ops = fallback.float_ops(model) if allow_float else []
    if (in_type, out_type) != (io_dtype, io_dtype):
        fallback.retype_float_io(model, io_dtype, _opcode_index)
    _drop_weight_ranges(model)
    quantized = _save(model)
    _check_runs(quantized)
    return quantized, ops


def _quantize(flatbuffer: bytes, in_shapes, in_type, out_type, allow_float: bool, activations: str = "int8") -> bytes:
    """LiteRT's quantiser on a model whose tensors carry min/max: with no samples fed, the
    calibration wrapper keeps the ranges attached instead of recording its own."""
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as calibration

    from ..verification.runtimes.litert import _quiet_stderr

    act, bias = {"int8": (np.int8, np.int32), "int16": (np.int16, np.int64)}[activations]
    with _quiet_stderr():
        wrapper = calibration.CalibrationWrapper(flatbuffer, [], [])
        wrapper.Prepare(in_shapes)
        return bytes(wrapper.QuantizeModel(
            np.dtype(in_type).num,   # model input type (float inputs only; integer ones stay)
            np.dtype(out_type).num,  # model output type
            allow_float,             # float fallback for ops without an int8 kernel
            np.dtype(act).num,       # activation type
            np.dtype(bias).num,      # bias type (int64 with int16 activations: TFLite's 16x8 mode)
            False,                   # disable per-channel
            False,                   # disable per-channel for dense layers
        ))


def _check_runs(model_bytes: bytes) -> None:
    """LiteRT's quantiser can emit models its own kernels then refuse (e.g. a PADV2 whose
    fill value stayed float): run one inference so such a file is never shipped."""
    from ai_edge_litert.interpreter import Interpreter

    from ..verification.runtimes.litert import _quiet_stderr

    try:
        with _quiet_stderr():
            it = Interpreter(model_content=model_bytes, num_threads=1)
            it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        it.invoke()
    except Exception as exc:
        raise ModelError(f"the full-integer TFLite model LiteRT produced does not run: {one_line(exc)}") from None


def _with_progress(samples, progress):
    for i, x in enumerate(samples):
        if progress:
            progress(i + 1, len(samples))
        yield x
