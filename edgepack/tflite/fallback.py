"""Full-integer quantisation around what LiteRT's quantiser cannot do.

- Ops it refuses in int8 (DIV by a variable, POW, CAST to float, …) stay float between
  QUANTIZE/DEQUANTIZE (the quantiser's own allow-float mode): `float_ops` names them and,
  when such an op sits at the model's edge, `retype_float_io` restores the requested
  integer I/O type with one QUANTIZE (outputs) or DEQUANTIZE (inputs) using the tensor's
  calibrated range.
- It gives SUM's output its input's scale, so a sum over many elements (mean pooling's
  numerator) saturates: `sum_as_mean` rewrites each float SUM as MEAN then MUL by the
  count before quantisation (the float model keeps its SUM).
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from .builder import OPERATOR_NAMES, tensor_type

BOP = schema.BuiltinOperator


def float_ops(model) -> list[str]:
    """Names of the ops (besides QUANTIZE/DEQUANTIZE) that read or write float32
    activations, sorted."""
    g = model.subgraphs[0]
    found = set()
    for op in g.operators:
        code = model.operatorCodes[op.opcodeIndex].builtinCode
        if code in (BOP.QUANTIZE, BOP.DEQUANTIZE):
            continue
        tensors = [g.tensors[int(i)] for i in list(op.inputs) + list(op.outputs) if i >= 0]
        if any(t.type == schema.TensorType.FLOAT32 and not (t.buffer and model.buffers[t.buffer].data is not None)
               for t in tensors):
            found.add(OPERATOR_NAMES.get(code, str(code)))
    return sorted(found)


def qparams(lo: float, hi: float, dtype) -> tuple[float, int]:
    """Asymmetric (scale, zero point) for [lo, hi] as TFLite computes them (0 representable)."""
    info = np.iinfo(dtype)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / (info.max - info.min) or 1.0
    zp = int(np.clip(np.round(info.min - lo / scale), info.min, info.max))
    return scale, zp


def retype_float_io(model, io_dtype, opcode_index) -> None:
    """Give every float32 graph input/output the integer type `io_dtype`: a new integer
    tensor at the boundary plus a DEQUANTIZE (input) or QUANTIZE (output) next to it.
    The float tensor's min/max (kept by the quantiser) give the parameters."""
    g = model.subgraphs[0]
    sig = (model.signatureDefs or [None])[0]
    for is_input, ios in ((True, g.inputs), (False, g.outputs)):
        for pos, index in enumerate(list(ios)):
            t = g.tensors[int(index)]
            if t.type != schema.TensorType.FLOAT32:
                continue
            q = t.quantization
            if q is None or q.min is None or len(q.min) == 0:
                raise ValueError(f"no calibrated range for float model {'input' if is_input else 'output'} "
                                 f"{t.name!r}")
            scale, zp = qparams(q.min[0], q.max[0], io_dtype)
            edge = schema.TensorT()
            edge.name, edge.shape, edge.type, edge.buffer = t.name, t.shape, tensor_type(io_dtype), 0
            edge.quantization = schema.QuantizationParametersT()
            edge.quantization.scale, edge.quantization.zeroPoint = [scale], [zp]
            t.name = (t.name.decode() if isinstance(t.name, bytes) else t.name) + "_float"
            g.tensors.append(edge)
            new = len(g.tensors) - 1
            op = schema.OperatorT()
            op.opcodeIndex = opcode_index(model, BOP.DEQUANTIZE if is_input else BOP.QUANTIZE)
            op.inputs = np.asarray([new if is_input else int(index)], np.int32)
            op.outputs = np.asarray([int(index) if is_input else new], np.int32)
            if is_input:
                g.operators.insert(0, op)
            else:
                g.operators.append(op)
            ios[pos] = new
            for m in (sig.inputs if is_input else sig.outputs) if sig is not None else []:
                if m.tensorIndex == int(index):
                    m.tensorIndex = new


def sum_as_mean(model, opcode_index) -> None:
    """SUM(x, axes) -> MUL(MEAN(x, axes), n) for float SUMs, n the number of summed
    elements; the MEAN output's range is the SUM's divided by n."""
    g = model.subgraphs[0]
    ops = []
    for op in g.operators:
        ops.append(op)
        if model.operatorCodes[op.opcodeIndex].builtinCode != BOP.SUM:
            continue
        x, out = g.tensors[int(op.inputs[0])], g.tensors[int(op.outputs[0])]
        if x.type != schema.TensorType.FLOAT32 or out.quantization is None or out.quantization.min is None:
            continue
        n = int(np.prod(x.shape)) // max(int(np.prod(out.shape)), 1)
        mean = schema.TensorT()
        mean.name = (out.name.decode() if isinstance(out.name, bytes) else out.name) + "_mean"
        mean.shape, mean.type, mean.buffer = out.shape, out.type, 0
        mean.quantization = schema.QuantizationParametersT()
        mean.quantization.min = [float(v) / n for v in out.quantization.min]
        mean.quantization.max = [float(v) / n for v in out.quantization.max]
        count = schema.TensorT()
        count.name, count.shape, count.type = mean.name + "_count", np.zeros(0, np.int32), out.type
        buf = schema.BufferT()
        buf.data = np.frombuffer(np.asarray(n, np.float32).tobytes(), np.uint8)
        model.buffers.append(buf)
        count.buffer = len(model.buffers) - 1
        g.tensors += [mean, count]
        final = int(op.outputs[0])
        op.opcodeIndex = opcode_index(model, BOP.MEAN)
        op.outputs = np.asarray([len(g.tensors) - 2], np.int32)
        mul = schema.OperatorT()
        mul.opcodeIndex = opcode_index(model, BOP.MUL)
        mul.inputs = np.asarray([len(g.tensors) - 2, len(g.tensors) - 1], np.int32)
        mul.outputs = np.asarray([final], np.int32)
        mul.builtinOptionsType, mul.builtinOptions = schema.BuiltinOptions.MulOptions, schema.MulOptionsT()
        ops.append(mul)
    g.operators = ops
    _drop_unused_opcodes(model)


def _drop_unused_opcodes(model) -> None:
    """LiteRT's quantiser fails on an operator code no operator uses."""
    g = model.subgraphs[0]
    used = sorted({op.opcodeIndex for op in g.operators})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for op in g.operators:
        op.opcodeIndex = remap[op.opcodeIndex]
