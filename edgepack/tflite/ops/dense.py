"""Matrix products: ONNX Gemm and MatMul as TFLite FULLY_CONNECTED (constant 2-D weight)
or BATCH_MATMUL (two variable operands), in ONNX layout.
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
    if ra < 2 or rb < 2:
        fail(node, "MatMul with 1-D operands is not supported")
    out = ctx.output(node.output[0], out_shape)
    ctx.b.op(BOP.BATCH_MATMUL, [ctx.get(a_name, identity(ra)), ctx.get(b_name, identity(rb))], [out],
             *options("BatchMatMulOptions"))
