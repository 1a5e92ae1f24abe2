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

from ..errors import DataError

BOP = schema.BuiltinOperator
# Ops whose output values are a subset/rearrangement of their first input's values.
_SAME_RANGE = {BOP.RESHAPE, BOP.TRANSPOSE, BOP.SQUEEZE, BOP.EXPAND_DIMS, BOP.STRIDED_SLICE, BOP.SLICE,
               BOP.SPLIT, BOP.SPLIT_V, BOP.MAX_POOL_2D, BOP.MIRROR_PAD, BOP.GATHER, BOP.BROADCAST_TO, BOP.TILE}


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
            q.min, q.max = _usable(lo, hi)
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
    """Global min/max of the given tensors over the samples, on the float TFLite model.

    Each sample is one model call: an array (single-input models) or a dict input name ->
    array, in the TFLite input layout."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from ..verification.runtimes.litert import _quiet_stderr

    with _quiet_stderr():
        it = Interpreter(model_content=model_bytes, num_threads=2,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                         experimental_preserve_all_tensors=True)
        it.allocate_tensors()
    inputs = it.get_input_details()
    out: dict[int, tuple[float, float]] = {}
    for x in samples:
        for d, arr in zip(inputs, feed_list(inputs, x)):
            arr = np.asarray(arr)
            it.set_tensor(d["index"], np.ascontiguousarray(arr, d["dtype"]).reshape(arr.shape))  # 0-d stays 0-d
        it.invoke()
        for i in indices:
            view = it.tensor(i)()
            lo, hi = float(view.min()), float(view.max())
            del view
            if i in out:
                lo, hi = min(lo, out[i][0]), max(hi, out[i][1])
            out[i] = (lo, hi)
    return out


def feed_list(inputs: list[dict], sample) -> list[np.ndarray]:
    """One sample as arrays in the order of the interpreter's `inputs` (its input details)."""
    if not isinstance(sample, dict):
        if len(inputs) != 1:
            raise DataError(f"the model has {len(inputs)} inputs ({', '.join(d['name'] for d in inputs)}); "
                            "each calibration sample must be a dict of input name -> array")
        return [sample]
    missing = [d["name"] for d in inputs if d["name"] not in sample]
    if missing:
        raise DataError(f"calibration sample has no array for input(s) {', '.join(missing)} "
                        f"(it has {', '.join(sample)})")
    return [sample[d["name"]] for d in inputs]


_FINITE = 1e30


def _usable(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """A range the quantiser can turn into a scale: one that held only zeros during
    calibration (e.g. a padding mask's bias when no sample was padded) would give scale 0,
    which LiteRT's kernels refuse; it gets a tiny width instead. Infinite ends are cut."""
    lo, hi = max(float(lo), -_FINITE), min(float(hi), _FINITE)  # a -inf mask bias: saturate instead
    if min(lo, 0.0) == max(hi, 0.0):
        hi = 1e-6
    return [lo], [hi]


def set_ranges(model, measured: dict[int, tuple[float, float]]) -> None:
    for i, (lo, hi) in measured.items():
        q = schema.QuantizationParametersT()
        q.min, q.max = _usable(lo, hi)
        model.subgraphs[0].tensors[i].quantization = q


# A padding mask enters attention as a huge negative bias (-1e4, -1e9, float min, -inf)
# added to the scores before SOFTMAX. A calibrated range that spans it leaves the real
# scores a few int8 steps (scale ~40 for -1e4): attention goes uniform. Softmax ignores
# what lies far below a row's maximum, so the range is cut to the scores' own plus this
# margin; masked positions then saturate at ≥ MASK_MARGIN below every row's maximum
# (weight < e^-10). The bias itself is cut likewise (an extreme scale ratio between the
# ADD's operands would make LiteRT's int8 ADD abort).
MASK_MARGIN = 10.0
_HUGE_NEGATIVE = -1e3
_LAYOUT_OPS = (BOP.RESHAPE, BOP.TRANSPOSE, BOP.SQUEEZE, BOP.EXPAND_DIMS)


def tame_softmax_inputs(model) -> list[str]:
    """Narrow the ranges of SOFTMAX inputs that are masked scores (ADD of a huge negative
    bias, or SELECT_V2 with one), of the layout-only ops in between, and of the bias.
    Returns the names of the tensors changed.

    Every layer's SOFTMAX is judged on the ranges as calibrated, before any is narrowed:
    one mask bias is usually shared by all layers, and once cut for the first layer it no
    longer looks like a mask to the others. A shared bias is cut at the lowest floor any of
    its layers asks for."""
    g = model.subgraphs[0]
    producer = {int(o): op for op in g.operators for o in op.outputs}

    def code(op):
        return model.operatorCodes[op.opcodeIndex].builtinCode

    def back(i):  # i and the tensors it is a re-layout of, up to the op that computed it
        chain, p = [i], producer.get(i)
        while p is not None and code(p) in _LAYOUT_OPS:
            chain.append(int(p.inputs[0]))
            p = producer.get(chain[-1])
        return chain, p

    scores = []                        # (chain, lo, hi) per masked SOFTMAX
    bias_floor: dict[int, float] = {}  # bias tensor -> lowest floor asked for
    bias_hi: dict[int, float] = {}
    for op in g.operators:
        if code(op) != BOP.SOFTMAX:
            continue
        chain, p = back(int(op.inputs[0]))
        if p is None or code(p) not in (BOP.ADD, BOP.SELECT_V2):
            continue
        pair = [int(i) for i in (p.inputs[:2] if code(p) == BOP.ADD else p.inputs[1:3])]
        for a, b in (pair, pair[::-1]):
            ra, rb = _span(model, a), _span(model, b)
            if ra is None or rb is None or rb[0] > _HUGE_NEGATIVE or ra[0] <= _HUGE_NEGATIVE:
                continue
            if code(p) == BOP.SELECT_V2 and rb[1] > _HUGE_NEGATIVE:
                continue
            shift = rb[1] if code(p) == BOP.ADD else 0.0  # the bias where nothing is masked
            lo, hi = ra[0] + shift - (ra[1] - ra[0]) - MASK_MARGIN, ra[1] + max(shift, 0.0)
            floor = lo - ra[1] if code(p) == BOP.ADD else lo  # bias below this saturates anyway
            scores.append((chain, lo, hi))
            bias_floor[b] = min(bias_floor.get(b, floor), floor)
            bias_hi[b] = rb[1]
            break
    changed = []
    for chain, lo, hi in scores:
        changed += _raise_floor(model, chain, lo, hi)
    for b, floor in bias_floor.items():
        bias_chain, maker = back(b)
        changed += _raise_floor(model, bias_chain, floor, bias_hi[b])
        if maker is not None and code(maker) == BOP.MUL:  # (1 - mask) · big negative constant
            x, k = [int(i) for i in maker.inputs]
            x, k = (k, x) if _const(model, g.tensors[x]) is not None else (x, k)
            rx = _span(model, x)
            if _const(model, g.tensors[k]) is not None and rx is not None and rx[0] >= 0 and rx[1] > 0:
                changed += _raise_floor(model, [k], floor / rx[1], 0.0)
    return list(dict.fromkeys(changed))


def _span(model, i):
    t = model.subgraphs[0].tensors[i]
    c = _const(model, t)
    if c is not None and c.size:
        return float(c.min()), float(c.max())
    q = t.quantization
    return (float(q.min[0]), float(q.max[0])) if q is not None and q.min is not None and len(q.min) else None


def _raise_floor(model, tensors, lo: float, hi: float) -> list[str]:
    """Cut the range (activations) or the values (constants) of `tensors` below at `lo`."""
    changed = []
    for i in tensors:
        t = model.subgraphs[0].tensors[i]
        cur, c = _span(model, i), _const(model, t)
        if cur is None or cur[0] >= lo:
            continue
        if c is not None:
            model.buffers[t.buffer].data = np.frombuffer(np.maximum(c, np.float32(lo)).astype(np.float32).tobytes(),
                                                         np.uint8)
        else:
            t.quantization.min, t.quantization.max = _usable(lo, max(hi, cur[1]))
        changed.append(_name(t))
    return changed
