"""Shape and layout ops: Reshape, Flatten, Squeeze/Unsqueeze (a RESHAPE in the input's layout),
Transpose (free: only the layout permutation changes), Concat, Split, Slice and Pad
(axes translated through the input's layout), the pass-throughs Identity and Dropout, and
Cast.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..builder import options, schema
from ..context import Context, Value, attrs, identity, inverse, tfl_dtype
from ._common import BOP, converter, fail, layout_for, static_shape


def _reshape(ctx: Context, node, x: str, out_shape):
    rank = len(ctx.shape(x))
    xin = ctx.get(x, identity(rank))
    out = ctx.output(node.output[0], out_shape)
    ctx.reshape_to(xin, out, out_shape)


@converter("Reshape")
def reshape(ctx: Context, node):
    _reshape(ctx, node, node.input[0], static_shape(ctx, node.output[0], node))


@converter("Flatten")
def flatten(ctx: Context, node):
    shape = ctx.shape(node.input[0])
    axis = attrs(node).get("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis  # ONNX allows axis == rank: (all, 1)
    _reshape(ctx, node, node.input[0], (int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))))


@converter("Squeeze", "Unsqueeze")
def squeeze(ctx: Context, node):
    """A RESHAPE in the input's own layout: only size-1 axes come or go, so the memory
    order stays and an NHWC value stays NHWC-like (no TRANSPOSE)."""
    x = node.input[0]
    shape, out_shape = ctx.shape(x), static_shape(ctx, node.output[0], node)
    p = ctx.perm_of(x)
    if len(node.input) > 1 and node.input[1]:
        axes = ctx.require_const(node.input[1], node, "axes").reshape(-1).tolist()
    else:
        axes = attrs(node).get("axes")
    if node.op_type == "Squeeze":
        gone = {ax % len(shape) for ax in axes} if axes else {i for i, d in enumerate(shape) if d == 1}
        kept = [i for i in range(len(shape)) if i not in gone]
        out_perm = tuple(kept.index(a) for a in p if a not in gone)
    else:
        added = sorted(ax % len(out_shape) for ax in axes)
        old_axes = [i for i in range(len(out_shape)) if i not in added]  # ONNX output axis of input axis i
        order = [old_axes[a] for a in p]
        for ax in added:  # each new unit axis before the first larger one in tensor order
            pos = next((i for i, o in enumerate(order) if o > ax), len(order))
            order.insert(pos, ax)
        out_perm = tuple(order)
    out = ctx.output(node.output[0], out_shape, out_perm)
    ctx.reshape_to(ctx.get(x, p), out, [out_shape[a] for a in out_perm])


@converter("Transpose")
def transpose(ctx: Context, node):
    """Free: the output is the same TFLite tensor, with its layout permutation updated."""
    x = node.input[0]
    rank = len(ctx.shape(x))
    q = tuple(attrs(node).get("perm", list(reversed(range(rank)))))
    v = ctx.value(x)
    p = ctx.perm_of(x)
    idx = ctx.get(x, p)
    inv_q = inverse(q)
    r = tuple(inv_q[pi] for pi in p)  # Y.transpose(r) == X.transpose(p)
    out_shape = tuple(v.shape[a] for a in q)
    # X's layouts are Y's too, also those made later (e.g. Kᵀ reads K's transposed copy).
    ctx.values[node.output[0]] = Value(out_shape, v.dtype, r, idx, cache={r: idx}, source=(v, q))


@converter("Concat")
def concat(ctx: Context, node):
    axis = attrs(node)["axis"]
    names = [n for n in node.input if n]
    rank, perm = layout_for(ctx, names)
    axis %= rank
    ins = [ctx.get(n, perm) for n in names]
    # No activation fusion: LiteRT's float CONCATENATION kernel ignores fusedActivationFunction.
    out = ctx.output(node.output[0], static_shape(ctx, node.output[0], node), perm)
    ctx.b.op(BOP.CONCATENATION, ins, [out], *options("ConcatenationOptions", axis=inverse(perm)[axis]))


@converter("Split")
def split(ctx: Context, node):
    a = attrs(node)
    x = node.input[0]
    shape = ctx.shape(x)
    axis = a.get("axis", 0) % len(shape)
    if len(node.input) > 1 and node.input[1]:
        sizes = ctx.require_const(node.input[1], node, "split").reshape(-1).tolist()
    elif "split" in a:
        sizes = list(a["split"])
    else:
        k = len(node.output)
        step = -(-shape[axis] // k)
        sizes = [min(step, shape[axis] - i * step) for i in range(k)]
    perm = ctx.perm_of(x)
    outs = [ctx.output(o, static_shape(ctx, o, node), perm) for o in node.output]
    ctx.b.op(BOP.SPLIT_V, [ctx.get(x, perm), ctx.b.const("size_splits", np.asarray(sizes, np.int32)),
                           ctx.b.const("axis", np.asarray(inverse(perm)[axis], np.int32))], outs,
             *options("SplitVOptions", numSplits=len(outs)))


@converter("Slice")
def slice_(ctx: Context, node):
    x = node.input[0]
    shape = ctx.shape(x)
    rank = len(shape)
    starts = ctx.require_const(node.input[1], node, "starts").reshape(-1).tolist()
    ends = ctx.require_const(node.input[2], node, "ends").reshape(-1).tolist()
    axes, steps = list(range(len(starts))), [1] * len(starts)
    if len(node.input) > 3 and node.input[3]:
        axes = ctx.require_const(node.input[3], node, "axes").reshape(-1).tolist()
    if len(node.input) > 4 and node.input[4]:
        steps = ctx.require_const(node.input[4], node, "steps").reshape(-1).tolist()
    perm = ctx.perm_of(x)
    inv = inverse(perm)
    begin, end, stride = [0] * rank, list(shape), [1] * rank
    end_mask = 0
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax %= rank
        if sp == 0:
            fail(node, "a step of 0 is invalid")
        b_, e_, s_ = slice(int(st), int(max(min(en, 2**62), -(2**62))), int(sp)).indices(shape[ax])
        begin[ax], end[ax], stride[ax] = b_, e_, s_
        if s_ < 0 and e_ < 0:
            end_mask |= 1 << inv[ax]

    def in_layout(v):  # per-axis values, ONNX order -> the tensor's order
        return np.asarray([v[perm[i]] for i in range(rank)], np.int32)

    out = ctx.output(node.output[0], static_shape(ctx, node.output[0], node), perm)
    ctx.b.op(BOP.STRIDED_SLICE, [ctx.get(x, perm), ctx.b.const("begin", in_layout(begin)),
                                 ctx.b.const("end", in_layout(end)), ctx.b.const("strides", in_layout(stride))], [out],
             *options("StridedSliceOptions", endMask=end_mask))


@converter("Pad")
def pad(ctx: Context, node):
    a = attrs(node)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    x = node.input[0]
    rank = len(ctx.shape(x))
    pads = ctx.require_const(node.input[1], node, "pads").reshape(-1).tolist() if len(node.input) > 1 else a["pads"]
    if len(node.input) > 3 and node.input[3]:
        axes = [ax % rank for ax in ctx.require_const(node.input[3], node, "axes").reshape(-1).tolist()]
        full = [0] * (2 * rank)
        for i, ax in enumerate(axes):
            full[ax], full[ax + rank] = pads[i], pads[i + len(axes)]
        pads = full
    value = 0.0
    if len(node.input) > 2 and node.input[2]:
        value = float(ctx.require_const(node.input[2], node, "constant_value"))
    if any(p < 0 for p in pads):
        fail(node, "negative pads (cropping) are not supported")
    perm = ctx.perm_of(x)
    paddings = np.asarray([[pads[perm[i]], pads[perm[i] + rank]] for i in range(rank)], np.int32)
    xin = ctx.get(x, perm)
    out = ctx.output(node.output[0], static_shape(ctx, node.output[0], node), perm)
    pidx = ctx.b.const("paddings", paddings)
    if mode == "constant":
        if value == 0.0:
            ctx.b.op(BOP.PAD, [xin, pidx], [out], *options("PadOptions"))
        else:
            ctx.b.op(BOP.PADV2, [xin, pidx, ctx.b.const("pad_value", np.asarray([value], np.float32))], [out],
                     *options("PadV2Options"))
    elif mode == "reflect":
        ctx.b.op(BOP.MIRROR_PAD, [xin, pidx], [out], *options("MirrorPadOptions", mode=schema.MirrorPadMode.REFLECT))
    else:
        fail(node, f"pad mode '{mode}' is not supported (constant, reflect are)")


@converter("Identity", "Dropout")
def identity_op(ctx: Context, node):
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        training = ctx.const(node.input[2])
        if training is None or bool(training):
            fail(node, "training_mode must be a constant false (inference); export the model in eval mode")
    mask = node.output[1] if node.op_type == "Dropout" and len(node.output) > 1 else ""
    if mask and (ctx.consumers.get(mask) or mask in ctx.graph_outputs):
        fail(node, "reading the mask output is not supported")
    ctx.alias(node.output[0], node.input[0])


_CASTABLE = {np.dtype(t) for t in (np.float32, np.int32, np.int64, np.bool_)}


@converter("Cast")
def cast(ctx: Context, node):
    """CAST between float32, int32/int64 (int32 inside) and bool, with ONNX's semantics:
    float to int truncates toward zero, non-zero is true."""
    x = node.input[0]
    to = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(attrs(node)["to"]))
    src = ctx.dtype(x)
    if to not in _CASTABLE or src not in _CASTABLE | {np.dtype(np.uint8), np.dtype(np.int8)}:
        fail(node, f"casting {ctx.value(x).dtype} to {to} is not supported (float32, int32, int64 and bool are)")
    if tfl_dtype(to) == src:
        ctx.alias(node.output[0], x)
        return
    perm = ctx.perm_of(x)
    out = ctx.output(node.output[0], ctx.shape(x), perm, tfl_dtype(to))
    ctx.b.op(BOP.CAST, [ctx.get(x, perm)], [out])
