"""Indexing and broadcasting: Gather (an embedding lookup of a constant table by variable
ids, or constant indices into an activation along any axis), Expand (BROADCAST_TO) and
Tile, in the layout of the data they move.
"""

from __future__ import annotations

import numpy as np

from ..builder import options
from ..context import Context, attrs, identity, inverse
from ._common import BOP, aligned, converter, fail, static_shape


@converter("Gather")
def gather(ctx: Context, node):
    """TFLite GATHER along the data's tensor axis. Variable indices must be in range and
    non-negative (LiteRT stops with an error otherwise); constant ones are normalised here."""
    data, indices = node.input
    shape = ctx.shape(data)
    axis = attrs(node).get("axis", 0) % len(shape)
    ind = ctx.const(indices)
    if ind is not None:
        if np.any(ind < -shape[axis]) or np.any(ind >= shape[axis]):
            fail(node, f"constant indices out of range for axis {axis} of size {shape[axis]}")
        ind_idx = ctx.b.const(f"{node.name}_indices", np.asarray(ind % shape[axis], np.int32))
        k = ind.ndim
    else:
        if ctx.dtype(indices).kind not in "iu":
            fail(node, f"indices of type {ctx.dtype(indices)}")
        k = len(ctx.shape(indices))
        ind_idx = ctx.get(indices, identity(k))
    p = ctx.perm_of(data) if ctx.const(data) is None else identity(len(shape))
    ta = inverse(p)[axis]

    def out_axis(d):  # ONNX output axis of data axis d != axis
        return d if d < axis else d + k - 1

    q = tuple([out_axis(p[i]) for i in range(ta)] + [axis + j for j in range(k)]
              + [out_axis(p[i]) for i in range(ta + 1, len(shape))])
    out = ctx.output(node.output[0], static_shape(ctx, node.output[0], node), q, ctx.dtype(data))
    ctx.b.op(BOP.GATHER, [ctx.get(data, p), ind_idx], [out], *options("GatherOptions", axis=ta, batchDims=0))


@converter("Expand")
def expand(ctx: Context, node):
    x = node.input[0]
    ctx.require_const(node.input[1], node, "shape")
    out_shape = static_shape(ctx, node.output[0], node)
    if tuple(out_shape) == tuple(ctx.shape(x)):
        ctx.alias(node.output[0], x)
        return
    rank = len(out_shape)
    perm = ctx.perm_of(x) if len(ctx.shape(x)) == rank else identity(rank)
    xin = aligned(ctx, x, rank, perm)
    out = ctx.output(node.output[0], out_shape, perm, ctx.dtype(x))
    target = ctx.b.const(f"{node.name}_shape", np.asarray([out_shape[a] for a in perm], np.int32))
    ctx.b.op(BOP.BROADCAST_TO, [xin, target], [out], *options("BroadcastToOptions"))


@converter("Tile")
def tile(ctx: Context, node):
    x = node.input[0]
    repeats = ctx.require_const(node.input[1], node, "repeats").reshape(-1).tolist()
    perm = ctx.perm_of(x)
    out = ctx.output(node.output[0], static_shape(ctx, node.output[0], node), perm, ctx.dtype(x))
    multiples = ctx.b.const(f"{node.name}_multiples", np.asarray([repeats[a] for a in perm], np.int32))
    ctx.b.op(BOP.TILE, [ctx.get(x, perm), multiples], [out], *options("TileOptions"))
