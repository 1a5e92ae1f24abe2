"""Reductions beyond pool.py's ReduceMean/Max/Min/Sum: ReduceProd, and the norms
ReduceL1 (SUM of ABS), ReduceL2 (SQRT of SUM of squares) and ReduceSumSquare, over any
axes (attribute or input), keepdims either way, in the input's layout.
"""

from __future__ import annotations

import numpy as np

from ..builder import options
from ..context import Context, attrs, inverse
from ._common import BOP, converter


def reduce_axes(ctx: Context, node) -> list[int] | None:
    """The node's reduction axes (normalised), or None for ONNX's no-op (empty axes with
    noop_with_empty_axes=1)."""
    a = attrs(node)
    rank = len(ctx.shape(node.input[0]))
    if len(node.input) > 1 and node.input[1]:
        axes = ctx.require_const(node.input[1], node, "axes").reshape(-1).tolist()
    else:
        axes = a.get("axes")
    if not axes:
        return None if a.get("noop_with_empty_axes", 0) else list(range(rank))
    return sorted({ax % rank for ax in axes})


_PRE = {"ReduceProd": None, "ReduceSum": None, "ReduceL1": BOP.ABS, "ReduceL2": "square", "ReduceSumSquare": "square"}


@converter("ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare")
def reduce_other(ctx: Context, node):
    x, out_name = node.input[0], node.output[0]
    axes = reduce_axes(ctx, node)
    keep = bool(attrs(node).get("keepdims", 1))
    shape, perm = ctx.shape(x), ctx.perm_of(x)
    xin = ctx.get(x, perm)
    tshape = ctx.b.shape_of(xin)
    pre = _PRE[node.op_type]
    if pre is not None and axes is not None:  # element-wise step before the sum
        t = ctx.b.tensor(f"{out_name}_{'abs' if pre == BOP.ABS else 'squared'}", tshape, ctx.dtype(x))
        if pre == "square":
            ctx.b.op(BOP.MUL, [xin, xin], [t], *options("MulOptions"))
        else:
            ctx.b.op(BOP.ABS, [xin], [t])
        xin = t
    if axes is None:
        if pre is None:
            ctx.alias(out_name, x)
            return
        axes, keep = [], True  # ONNX still applies the element-wise step
    if keep:
        out_perm = perm
    else:
        kept = [a for a in range(len(shape)) if a not in axes]
        out_perm = tuple(kept.index(a) for a in perm if a not in axes)
    out_shape = tuple(1 if i in axes else d for i, d in enumerate(shape)) if keep else \
        tuple(d for i, d in enumerate(shape) if i not in axes)
    out = ctx.output(out_name, out_shape, out_perm, ctx.dtype(x))
    sqrt = node.op_type == "ReduceL2"
    target = ctx.b.tensor(f"{out_name}_sum_of_squares", ctx.b.shape_of(out)) if sqrt else out
    if axes:
        t_axes = np.asarray(sorted(inverse(perm)[a] for a in axes), np.int32)
        op = BOP.REDUCE_PROD if node.op_type == "ReduceProd" else BOP.SUM
        ctx.b.op(op, [xin, ctx.b.const(f"{out_name}_axes", t_axes)], [target],
                 *options("ReducerOptions", keepDims=keep))
    else:
        ctx.reshape_to(xin, target, ctx.b.shape_of(out))
    if sqrt:
        ctx.b.op(BOP.SQRT, [target], [out])
