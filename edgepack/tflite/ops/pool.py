"""Pooling and reductions: MaxPool/AveragePool (2-D in NHWC; 1-D as 2-D with a height of 1,
see conv.py; with exact handling of explicit padding and ceil_mode), GlobalAverage/MaxPool
(any rank) and ReduceMean/Max/Min/Sum, whose axes are translated through the input's layout.
"""

from __future__ import annotations

import numpy as np

from ..builder import options
from ..context import Context, attrs, inverse
from ._common import (
    BOP,
    PAD,
    clip_bounds,
    converter,
    edge_pad,
    explicit_pad,
    fail,
    pads_2d,
    same_pads,
    static_shape,
    take_activation,
)
from .conv import bind_1d, input_nhwc, lift_1d, output_nhwc, shape_4d


def _non_negative(ctx: Context, name: str) -> bool:
    """Whether an ONNX value is ≥ 0 by construction (the output of a ReLU-like op)."""
    producer = next((n for n in ctx.onnx.graph.node if name in n.output), None)
    if producer is None:
        return False
    if producer.op_type in ("Relu", "Sigmoid", "Softmax", "Abs", "Exp", "HardSigmoid"):
        return True
    if producer.op_type == "Clip":
        bounds = clip_bounds(ctx, producer)
        return bounds is not None and bounds[0] >= 0
    if producer.op_type in ("MaxPool", "Identity", "Dropout", "Reshape", "Flatten", "Transpose", "Concat"):
        return all(_non_negative(ctx, i) for i in producer.input[:1 if producer.op_type != "Concat" else None] if i)
    return False


@converter("MaxPool", "AveragePool")
def pool(ctx: Context, node):
    if len(node.output) > 1 and node.output[1]:
        fail(node, "MaxPool indices output is not supported")
    x = node.input[0]
    rank = len(ctx.shape(x))
    if rank not in (3, 4):
        fail(node, f"only 1-D and 2-D pooling is supported (input rank {rank})")
    if rank == 3:
        node = lift_1d(node)
    a = attrs(node)
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        fail(node, "dilated pooling is not supported")
    k = a["kernel_shape"]
    s = a.get("strides", [1, 1])
    _, _, h, w = shape_4d(ctx.shape(x))
    onnx_out = static_shape(ctx, node.output[0], node)
    out_shape = shape_4d(onnx_out)
    padding, explicit = pads_2d(node, (h, w), k, s, (1, 1))
    if padding == PAD.SAME and node.op_type == "AveragePool" and a.get("count_include_pad", 0):
        # TFLite's SAME average excludes the padding; to count it, pad with zeros explicitly.
        padding, explicit = PAD.VALID, [same_pads((h, w)[i], k[i], s[i], 1) for i in range(2)]
    # ceil_mode: extra rows/cols at the end that a floor-mode pool would not produce.
    extra = [max((out_shape[2 + i] - 1) * s[i] + k[i] - ((h, w)[i] + sum((explicit or [(0, 0), (0, 0)])[i])), 0)
             if padding == PAD.VALID else 0 for i in range(2)]
    if padding == PAD.SAME and a.get("ceil_mode", 0):
        sizes = [-(-(h, w)[i] // s[i]) for i in range(2)]
        if list(out_shape[2:]) != sizes:
            fail(node, "ceil_mode with this padding is not supported")
    if any(extra):
        explicit = [((explicit or [(0, 0), (0, 0)])[i][0], (explicit or [(0, 0), (0, 0)])[i][1] + extra[i])
                    for i in range(2)]
    xin = input_nhwc(ctx, x)
    is_max = node.op_type == "MaxPool"
    if explicit:
        if is_max:
            # Zero padding is exact for max-pooling a non-negative input (every window holds
            # a real value ≥ 0) and runs in XNNPACK; otherwise replicate the edge exactly.
            xin = explicit_pad(ctx, xin, explicit, node.name) if _non_negative(ctx, x) else \
                edge_pad(ctx, xin, explicit, node.name)
        else:
            if any(extra):
                fail(node, "AveragePool with ceil_mode that adds windows is not supported")
            if not a.get("count_include_pad", 0):
                fail(node, "AveragePool with explicit (non-SAME) padding and count_include_pad=0 is not supported")
            xin = explicit_pad(ctx, xin, explicit, node.name)
    act, out_name = take_activation(ctx, node)
    out = output_nhwc(ctx, out_name, onnx_out)
    ctx.b.op(BOP.MAX_POOL_2D if is_max else BOP.AVERAGE_POOL_2D, [xin], [out],
             *options("Pool2DOptions", padding=padding, strideH=s[0], strideW=s[1], filterHeight=k[0], filterWidth=k[1],
                      fusedActivationFunction=act))
    bind_1d(ctx, out_name, out, onnx_out)


def _reduce(ctx: Context, node, op, x: str, axes, keepdims: bool, out_name: str):
    rank = len(ctx.shape(x))
    axes = sorted({a % rank for a in axes})
    perm = ctx.perm_of(x)
    inv = inverse(perm)
    t_axes = sorted(inv[a] for a in axes)
    out_shape = static_shape(ctx, out_name, node)
    if keepdims:
        out_perm = perm
    else:
        kept = [a for a in range(rank) if a not in axes]
        out_perm = tuple(kept.index(perm[i]) for i in range(rank) if perm[i] not in axes)
    out = ctx.output(out_name, out_shape, out_perm)
    ctx.b.op(op, [ctx.get(x, perm), ctx.b.const("axes", np.asarray(t_axes, np.int32))], [out],
             *options("ReducerOptions", keepDims=bool(keepdims)))


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: Context, node):
    x = node.input[0]
    rank = len(ctx.shape(x))
    op = BOP.MEAN if node.op_type == "GlobalAveragePool" else BOP.REDUCE_MAX
    _reduce(ctx, node, op, x, list(range(2, rank)), True, node.output[0])


_REDUCERS = {"ReduceMean": BOP.MEAN, "ReduceMax": BOP.REDUCE_MAX, "ReduceMin": BOP.REDUCE_MIN, "ReduceSum": BOP.SUM}


@converter(*_REDUCERS)
def reduce(ctx: Context, node):
    a = attrs(node)
    x = node.input[0]
    rank = len(ctx.shape(x))
    if len(node.input) > 1 and node.input[1]:
        axes = ctx.require_const(node.input[1], node, "axes").reshape(-1).tolist()
    else:
        axes = a.get("axes")
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            ctx.alias(node.output[0], x)
            return
        axes = list(range(rank))
    _reduce(ctx, node, _REDUCERS[node.op_type], x, axes, bool(a.get("keepdims", 1)), node.output[0])
