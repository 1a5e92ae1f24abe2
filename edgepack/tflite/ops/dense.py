"""Matrix products: ONNX Gemm and MatMul as TFLite FULLY_CONNECTED (constant 2-D weight)
or BATCH_MATMUL (otherwise: both operands activations as in attention, batch dimensions
broadcast, 1-D operands), in ONNX layout; a transposed operand is read with adjX/adjY.
"""

from __future__ import annotations

import numpy as np

from ..builder import options
from ..context import Context, attrs, identity
from ._common import BOP, converter, fail, static_shape, take_activation


def _fully_connected(ctx: Context, node, x_idx: int, weight: np.ndarray, bias: np.ndarray | None, out_shape,
                     keep_dims: bool = False):
    act, out_name = take_activation(ctx, node)
    out = ctx.output(out_name, out_shape, identity(len(out_shape)))
    w_idx = ctx.b.const(f"{node.name}_weight", np.ascontiguousarray(weight.astype(np.float32)))
    b_idx = ctx.b.const(f"{node.name}_bias", bias.astype(np.float32)) if bias is not None else -1
    ctx.b.op(BOP.FULLY_CONNECTED, [x_idx, w_idx, b_idx], [out],
             *options("FullyConnectedOptions", fusedActivationFunction=act, keepNumDims=keep_dims))


@converter("Gemm")
def gemm(ctx: Context, node):
    a = attrs(node)
    if a.get("transA", 0):
        fail(node, "transA=1 is not supported")
    b = ctx.require_const(node.input[1], node, "B").astype(np.float32)
    weight = b if a.get("transB", 0) else b.T  # [out, in]
    weight = weight * a.get("alpha", 1.0)
    bias = None
    if len(node.input) > 2 and node.input[2]:
        c = ctx.require_const(node.input[2], node, "C").astype(np.float32) * a.get("beta", 1.0)
        if c.size not in (1, weight.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
            fail(node, f"C of shape {list(c.shape)} is not a per-output bias")
        bias = np.broadcast_to(c.reshape(-1), (weight.shape[0],)).copy()
    x_idx = ctx.get(node.input[0], identity(2))
    _fully_connected(ctx, node, x_idx, weight, bias, static_shape(ctx, node.output[0], node))


@converter("MatMul")
def matmul(ctx: Context, node):
    a_name, b_name = node.input
    b = ctx.const(b_name)
    out_shape = static_shape(ctx, node.output[0], node)
    if b is not None and b.ndim == 2:
        rank = len(ctx.shape(a_name))
        # keep_num_dims keeps every axis but the last, also for a 1-D `a` (ONNX drops its batch).
        _fully_connected(ctx, node, ctx.get(a_name, identity(rank)), b.T, None, out_shape, keep_dims=rank != 2)
        return
    ra, rb = len(ctx.shape(a_name)), len(ctx.onnx_shape(b_name))
    if ctx.dtype(a_name).kind != "f" or ctx.dtype(b_name).kind != "f":
        fail(node, "only floating-point MatMul is supported")
    a_idx, adj_x = _operand(ctx, a_name, 0)
    b_idx, adj_y = _operand(ctx, b_name, 1)
    opts = options("BatchMatMulOptions", adjX=adj_x, adjY=adj_y)
    out = ctx.output(node.output[0], out_shape)
    if ra > 1 and rb > 1:
        ctx.b.op(BOP.BATCH_MATMUL, [a_idx, b_idx], [out], *opts)
        return
    # ONNX's 1-D operands: a row (a) / a column (b) vector whose unit axis leaves the result.
    out_shape = tuple(out_shape)
    mid_shape = (1, 1) if ra == rb == 1 else out_shape[:-1] + (1, out_shape[-1]) if ra == 1 else out_shape + (1,)
    mid = ctx.b.tensor(f"{node.output[0]}_matrix", mid_shape)
    ctx.b.op(BOP.BATCH_MATMUL, [a_idx, b_idx], [mid], *opts)
    ctx.reshape_to(mid, out, out_shape)


def _operand(ctx: Context, name: str, pos: int) -> tuple[int, bool]:
    """A BATCH_MATMUL operand as (tensor, adjoint): a 1-D operand becomes a row (lhs) or a
    column (rhs) matrix; one available with its last two axes swapped (a free Transpose,
    as in Q·Kᵀ) is read as it is, with adjX/adjY set, instead of through a TRANSPOSE."""
    shape = ctx.onnx_shape(name)
    r = len(shape)
    if r == 1:
        src = ctx.get(name, identity(1))
        mat = (1, shape[0]) if pos == 0 else (shape[0], 1)
        idx = ctx.b.tensor(f"{name}_matrix", mat, ctx._np_dtype(src))
        ctx.reshape_to(src, idx, mat)
        return idx, False
    swapped = identity(r)[:-2] + (r - 1, r - 2)
    if ctx.value(name).const is None and not ctx.available(name, identity(r)) and ctx.available(name, swapped):
        return ctx.get(name, swapped), True
    return ctx.get(name, identity(r)), False
