"""Activation ranges for LiteRT's quantiser, from edgepack's one calibration pass.

The ONNX int8 artifact is calibrated by ONNX Runtime on the float ONNX graph; the TFLite
model computes the same values (its tensors carry the ONNX value names), so the very same
per-tensor ranges are written into the TFLite model as `quantization.min/max` and LiteRT's
quantiser turns them into scales. Both formats of a release then share one set of ranges,
and the calibration data is run once.

TFLite tensors that have no ONNX counterpart (layout changes, explicit pads, the pieces of
a decomposed op) get ranges by exact propagation: layout ops keep the range, a pad adds
its constant, scalar affine ops map the interval. Whatever is still missing is measured on
the TFLite float model itself over the calibration samples.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

BOP = schema.BuiltinOperator
# Ops whose output values are a subset/rearrangement of their first input's values.
_SAME_RANGE = {BOP.RESHAPE, BOP.TRANSPOSE, BOP.SQUEEZE, BOP.EXPAND_DIMS, BOP.STRIDED_SLICE, BOP.SLICE,
               BOP.SPLIT, BOP.SPLIT_V, BOP.MAX_POOL_2D, BOP.MIRROR_PAD, BOP.GATHER}


def _const(model, tensor):
    buf = model.buffers[tensor.buffer].data if tensor.buffer else None
    if buf is None:
        return None
    return (np.frombuffer(np.asarray(buf, np.uint8).tobytes(), dtype=np.float32)
            if tensor.type == schema.TensorType.FLOAT32 else None)


def _name(t) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else t.name


def assign_ranges(model, onnx_ranges: dict[str, tuple[float, float]]) -> list[int]:
    """Set min/max on every float activation tensor; returns indices still without one."""
    g = model.subgraphs[0]
    ranges: dict[int, tuple[float, float]] = {}
    for i, t in enumerate(g.tensors):
        name = _name(t)
        for key in (name, name.removesuffix("_internal")):
            if key in onnx_ranges:
                ranges[i] = onnx_ranges[key]
                break

    def code(op):
        return model.operatorCodes[op.opcodeIndex].builtinCode

    for _ in range(3):  # forward and backward passes until nothing changes
        changed = False
        for op in g.operators:
            c, ins, outs = code(op), [int(i) for i in op.inputs], [int(o) for o in op.outputs]
            data_in = ins[1] if c == BOP.SPLIT else (ins[0] if ins else -1)  # SPLIT takes (axis, input)
            src = ranges.get(data_in) if data_in >= 0 else None
            for o in outs:
                if o in ranges or src is None:
                    continue
                r = _forward(model, c, op, src, g)
                if r is not None:
                    ranges[o], changed = r, True
            # range-preserving ops also tell us their input's range
            if (c in (BOP.RESHAPE, BOP.TRANSPOSE, BOP.SQUEEZE, BOP.EXPAND_DIMS) and ins[0] not in ranges
                    and outs[0] in ranges):
                ranges[ins[0]], changed = ranges[outs[0]], True
            if c == BOP.CONCATENATION and outs[0] in ranges:
                for i in ins:
                    if i not in ranges and not g.tensors[i].buffer:
                        ranges[i], changed = ranges[outs[0]], True
        if not changed:
            break
    missing = []
    for i, t in enumerate(g.tensors):
        if t.type != schema.TensorType.FLOAT32 or t.buffer and model.buffers[t.buffer].data is not None:
            continue
        if i in ranges:
            q = schema.QuantizationParametersT()
            lo, hi = ranges[i]
            q.min, q.max = [float(lo)], [float(hi)]
            t.quantization = q
        else:
            missing.append(i)
    return missing


def _forward(model, c, op, src, g):
    lo, hi = src
    if c in _SAME_RANGE:
        return src
    if c in (BOP.PAD, BOP.PADV2):
        value = 0.0
        if c == BOP.PADV2:
            v = _const(model, g.tensors[int(op.inputs[2])])
            value = float(v[0]) if v is not None else 0.0
        return min(lo, value), max(hi, value)
    if c in (BOP.MUL, BOP.ADD, BOP.SUB, BOP.MINIMUM, BOP.MAXIMUM) and len(op.inputs) == 2:
        k = _const(model, g.tensors[int(op.inputs[1])])
        if k is None or k.size == 0:
            return None
        kmin, kmax = float(k.min()), float(k.max())
        if c == BOP.MUL:
            cands = [lo * kmin, lo * kmax, hi * kmin, hi * kmax]
            return min(cands), max(cands)
        if c == BOP.ADD:
            return lo + kmin, hi + kmax
        if c == BOP.SUB:
            return lo - kmax, hi - kmin
        if c == BOP.MINIMUM:
            return min(lo, kmin), min(hi, kmax)
        return max(lo, kmin), max(hi, kmax)
    return None


def measure_ranges(model_bytes: bytes, indices: list[int], samples) -> dict[int, tuple[float, float]]:
    """Global min/max of the given tensors over the samples, on the float TFLite model."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from ..verification.runtimes.litert import _quiet_stderr

    with _quiet_stderr():
        it = Interpreter(model_content=model_bytes, num_threads=2,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                         experimental_preserve_all_tensors=True)
        it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    out: dict[int, tuple[float, float]] = {}
    for x in samples:
        it.set_tensor(inp, np.ascontiguousarray(x, np.float32))
        it.invoke()
        for i in indices:
            view = it.tensor(i)()
            lo, hi = float(view.min()), float(view.max())
            del view
            if i in out:
                lo, hi = min(lo, out[i][0]), max(hi, out[i][1])
            out[i] = (lo, hi)
    return out


def set_ranges(model, measured: dict[int, tuple[float, float]]) -> None:
    for i, (lo, hi) in measured.items():
        q = schema.QuantizationParametersT()
        q.min, q.max = [float(lo)], [float(hi)]
        model.subgraphs[0].tensors[i].quantization = q
