"""Element-wise ops: binary arithmetic with ONNX broadcasting, unary maths, activations
(Relu, LeakyRelu, Clip, HardSigmoid, Gelu, Softmax/LogSoftmax) and inference BatchNorm.

They work in whatever layout their input already has (no transposes), except Softmax,
which needs its axis last; Add/Sub/Mul/Div and BatchNorm absorb a following activation.
"""

from __future__ import annotations

import numpy as np

from ..builder import options
from ..context import Context, attrs, identity, inverse
from ._common import (
    ACT,
    BOP,
    aligned,
    aligned_const,
    clip_bounds,
    converter,
    emit_elementwise,
    fail,
    layout_for,
    static_shape,
    take_activation,
)

_BINARY = {
    "Add": (BOP.ADD, "AddOptions", True),
    "Sub": (BOP.SUB, "SubOptions", True),
    "Mul": (BOP.MUL, "MulOptions", True),
    "Div": (BOP.DIV, "DivOptions", True),
    "Max": (BOP.MAXIMUM, "MaximumMinimumOptions", False),
    "Min": (BOP.MINIMUM, "MaximumMinimumOptions", False),
    "Pow": (BOP.POW, "PowOptions", False),
    "PRelu": (BOP.PRELU, None, False),
}


@converter(*_BINARY)
def binary(ctx: Context, node):
    if node.op_type in ("Max", "Min") and len(node.input) != 2:
        fail(node, "only two-input Max/Min is supported")
    if node.op_type == "Pow" and _pow_special(ctx, node):
        return
    op, opts_name, fusable = _BINARY[node.op_type]
    rank, perm = layout_for(ctx, node.input)
    ins = [aligned(ctx, n, rank, perm) for n in node.input]
    divisor = ctx.const(node.input[1]) if node.op_type == "Div" else None
    if divisor is not None and divisor.dtype.kind == "f":
        # Division by a constant as multiplication by its reciprocal (within an ulp):
        # LiteRT cannot quantise DIV to int8, MUL it can.
        op, opts_name = BOP.MUL, "MulOptions"
        reciprocal = (1 / divisor.astype(np.float64)).astype(divisor.dtype)
        ins[1] = aligned_const(ctx, f"{node.input[1]}_reciprocal", reciprocal, rank, perm)
    act, out_name = take_activation(ctx, node) if fusable else (ACT.NONE, node.output[0])
    out = ctx.output(out_name, static_shape(ctx, node.output[0], node), perm)
    if opts_name is None:
        ctx.b.op(op, ins, [out])
    elif fusable:
        ctx.b.op(op, ins, [out], *options(opts_name, fusedActivationFunction=act))
    else:
        ctx.b.op(op, ins, [out], *options(opts_name))


def _pow_special(ctx: Context, node) -> bool:
    """x^2, x^0.5, x^-0.5, x^1 and x^-1 as MUL/SQRT/RSQRT/alias/DIV (exact, and MUL, SQRT
    and RSQRT quantise to int8 where POW does not). General exponents go to POW, with a
    constant exponent in the base's type (ONNX allows them to differ)."""
    x, e_name = node.input
    e = ctx.const(e_name)
    if e is None:
        if ctx.dtype(x) != ctx.dtype(e_name):
            fail(node, "base and a variable exponent of different element types")
        return False
    if ctx.dtype(x).kind != "f" and np.any(e != np.round(e)):
        fail(node, "an integer base with a fractional exponent")
    if e.size != 1 or e.ndim > len(ctx.shape(x)):  # a tensor exponent (or one that adds axes)
        rank, perm = layout_for(ctx, node.input)
        ins = [aligned(ctx, x, rank, perm), aligned_const(ctx, e_name, e.astype(ctx.dtype(x)), rank, perm)]
        out = ctx.output(node.output[0], static_shape(ctx, node.output[0], node), perm)
        ctx.b.op(BOP.POW, ins, [out], *options("PowOptions"))
        return True
    k = float(e.reshape(()))
    if k == 1.0:
        ctx.alias(node.output[0], x)
        return True
    perm = ctx.perm_of(x)
    xin = ctx.get(x, perm)
    if k in (2.0, 0.5, -0.5, -1.0) and (k == 2.0 or ctx.dtype(x).kind == "f"):
        out = ctx.output(node.output[0], ctx.shape(x), perm)
        if k == 2.0:
            ctx.b.op(BOP.MUL, [xin, xin], [out], *options("MulOptions"))
        elif k == -1.0:
            ctx.b.op(BOP.DIV, [ctx.b.const("one", np.asarray(1.0, np.float32)), xin], [out], *options("DivOptions"))
        else:
            ctx.b.op(BOP.SQRT if k == 0.5 else BOP.RSQRT, [xin], [out])
        return True
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    ctx.b.op(BOP.POW, [xin, ctx.b.const(f"{node.name}_exponent", np.asarray(k, ctx.dtype(x)))], [out],
             *options("PowOptions"))
    return True


@converter("Reciprocal")
def reciprocal(ctx: Context, node):
    x = node.input[0]
    perm = ctx.perm_of(x)
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    ctx.b.op(BOP.DIV, [ctx.b.const("one", np.asarray(1.0, np.float32)), ctx.get(x, perm)], [out],
             *options("DivOptions"))


_UNARY = {
    "Relu": BOP.RELU,
    "Sigmoid": BOP.LOGISTIC,
    "Tanh": BOP.TANH,
    "HardSwish": BOP.HARD_SWISH,
    "Exp": BOP.EXP,
    "Log": BOP.LOG,
    "Sqrt": BOP.SQRT,
    "Abs": BOP.ABS,
    "Neg": BOP.NEG,
    "Floor": BOP.FLOOR,
    "Ceil": BOP.CEIL,
    "Elu": BOP.ELU,
    "Sin": BOP.SIN,
    "Cos": BOP.COS,
    "Round": BOP.ROUND,  # both round half to even
    "Sign": BOP.SIGN,
}


@converter(*_UNARY)
def unary(ctx: Context, node):
    if node.op_type == "Elu" and attrs(node).get("alpha", 1.0) != 1.0:
        fail(node, "Elu with alpha != 1 is not supported")
    x = node.input[0]
    perm = ctx.perm_of(x)
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    ctx.b.op(_UNARY[node.op_type], [ctx.get(x, perm)], [out])


@converter("LeakyRelu")
def leaky_relu(ctx: Context, node):
    x = node.input[0]
    perm = ctx.perm_of(x)
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    ctx.b.op(BOP.LEAKY_RELU, [ctx.get(x, perm)], [out],
             *options("LeakyReluOptions", alpha=attrs(node).get("alpha", 0.01)))


@converter("Clip")
def clip(ctx: Context, node):
    bounds = clip_bounds(ctx, node)
    if bounds is None:  # a computed bound (e.g. a log-mel floor at max - 80 dB): MAXIMUM then MINIMUM
        lo = node.input[1] if len(node.input) > 1 and node.input[1] else None
        hi = node.input[2] if len(node.input) > 2 and node.input[2] else None
        cur = node.input[0]
        if lo is not None:
            mid = f"{node.name}_clip_lo" if hi is not None else node.output[0]
            emit_elementwise(ctx, node, BOP.MAXIMUM, "MaximumMinimumOptions", names=[cur, lo], out_name=mid)
            cur = mid
        if hi is not None:
            emit_elementwise(ctx, node, BOP.MINIMUM, "MaximumMinimumOptions", names=[cur, hi])
        return
    x = node.input[0]
    perm = ctx.perm_of(x)
    xin = ctx.get(x, perm)
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    simple = {(0.0, 6.0): BOP.RELU6, (0.0, np.inf): BOP.RELU, (-1.0, 1.0): BOP.RELU_N1_TO_1}
    if bounds in simple:
        ctx.b.op(simple[bounds], [xin], [out])
        return
    lo, hi = bounds
    cur = xin
    # min(max(x, lo), hi): when lo > hi ONNX's result is hi.
    if np.isfinite(lo):
        nxt = out if not np.isfinite(hi) else ctx.b.tensor(f"{node.name}_max", ctx.b.shape_of(xin), ctx.dtype(x))
        ctx.b.op(BOP.MAXIMUM, [cur, ctx.b.const("clip_lo", np.asarray(lo, ctx.dtype(x)))], [nxt],
                 *options("MaximumMinimumOptions"))
        cur = nxt
    if np.isfinite(hi):
        ctx.b.op(BOP.MINIMUM, [cur, ctx.b.const("clip_hi", np.asarray(hi, ctx.dtype(x)))], [out],
                 *options("MaximumMinimumOptions"))
    if not np.isfinite(lo) and not np.isfinite(hi):
        ctx.reshape_to(xin, out, ctx.b.shape_of(xin))


@converter("HardSigmoid")
def hard_sigmoid(ctx: Context, node):
    a = attrs(node)
    alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
    x = node.input[0]
    perm = ctx.perm_of(x)
    xin = ctx.get(x, perm)
    shape = ctx.b.shape_of(xin)
    scaled = ctx.b.tensor(f"{node.name}_scaled", shape)
    ctx.b.op(BOP.MUL, [xin, ctx.b.const("hs_alpha", np.asarray(alpha, np.float32))], [scaled], *options("MulOptions"))
    shifted = ctx.b.tensor(f"{node.name}_shifted", shape)
    ctx.b.op(BOP.ADD, [scaled, ctx.b.const("hs_beta", np.asarray(beta, np.float32))], [shifted], *options("AddOptions"))
    capped = ctx.b.tensor(f"{node.name}_capped", shape)
    ctx.b.op(BOP.MINIMUM, [shifted, ctx.b.const("one", np.asarray(1.0, np.float32))], [capped],
             *options("MaximumMinimumOptions"))
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    ctx.b.op(BOP.MAXIMUM, [capped, ctx.b.const("zero", np.asarray(0.0, np.float32))], [out],
             *options("MaximumMinimumOptions"))


@converter("Gelu")
def gelu(ctx: Context, node):
    approx = attrs(node).get("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    emit_gelu(ctx, node.input[0], node.output[0], approx == "tanh")


def emit_gelu(ctx: Context, x: str, out_name: str, tanh: bool):
    """One TFLite GELU from ONNX value `x` to `out_name` (also used for the Erf pattern)."""
    perm = ctx.perm_of(x)
    out = ctx.output(out_name, ctx.shape(x), perm)
    ctx.b.op(BOP.GELU, [ctx.get(x, perm)], [out], *options("GeluOptions", approximate=tanh))


@converter("Softmax", "LogSoftmax")
def softmax(ctx: Context, node):
    x = node.input[0]
    rank = len(ctx.shape(x))
    opset = next((o.version for o in ctx.onnx.opset_import if o.domain in ("", "ai.onnx")), 18)
    axis = attrs(node).get("axis", -1 if opset >= 13 else 1) % rank
    if opset < 13 and axis != rank - 1:
        # Before opset 13: normalised over all axes from `axis` on, as one flattened axis.
        shape = ctx.shape(x)
        flat = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        xin = ctx.get(x, identity(rank))
        mid = ctx.b.tensor(f"{node.name}_2d", flat)
        ctx.reshape_to(xin, mid, flat)
        res = ctx.b.tensor(f"{node.name}_2d_out", flat)
        _emit_softmax(ctx, node.op_type, mid, res)
        out = ctx.output(node.output[0], shape)
        ctx.reshape_to(res, out, shape)
        return
    perm = ctx.perm_of(x)
    if inverse(perm)[axis] != rank - 1:
        # TFLite normalises over the last axis: choose a layout that puts `axis` last.
        perm = tuple(a for a in perm if a != axis) + (axis,)
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    _emit_softmax(ctx, node.op_type, ctx.get(x, perm), out)


def _emit_softmax(ctx: Context, op_type: str, xin: int, out: int):
    if op_type == "Softmax":
        ctx.b.op(BOP.SOFTMAX, [xin], [out], *options("SoftmaxOptions", beta=1.0))
    else:
        ctx.b.op(BOP.LOG_SOFTMAX, [xin], [out], *options("LogSoftmaxOptions"))


@converter("BatchNormalization")
def batch_norm(ctx: Context, node):
    if attrs(node).get("training_mode", 0):
        fail(node, "training_mode=1 (batch statistics) is not supported; export the model in eval mode")
    scale, bias, mean, var = (ctx.require_const(n, node, "statistics").astype(np.float64) for n in node.input[1:5])
    eps = attrs(node).get("epsilon", 1e-5)
    mul = scale / np.sqrt(var + eps)
    add = bias - mean * mul
    x = node.input[0]
    rank = len(ctx.shape(x))
    perm = ctx.perm_of(x)
    cshape = (1, -1) + (1,) * (rank - 2)
    xin = ctx.get(x, perm)
    mid = ctx.b.tensor(f"{node.name}_scaled", ctx.b.shape_of(xin))
    mul_c = np.ascontiguousarray(mul.reshape(cshape).transpose(perm)).astype(np.float32)
    ctx.b.op(BOP.MUL, [xin, ctx.b.const("bn_mul", mul_c)], [mid], *options("MulOptions"))
    act, out_name = take_activation(ctx, node)
    out = ctx.output(out_name, ctx.shape(x), perm)
    add_c = np.ascontiguousarray(add.reshape(cshape).transpose(perm)).astype(np.float32)
    ctx.b.op(BOP.ADD, [mid, ctx.b.const("bn_add", add_c)], [out], *options("AddOptions", fusedActivationFunction=act))
