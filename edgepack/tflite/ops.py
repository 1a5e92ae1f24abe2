"""ONNX operator → TFLite operator converters, one function per ONNX op type.

Each converter reads its node's inputs through the Context (in the layout it needs),
emits TFLite ops, and binds its outputs with their layout. Attributes a converter cannot
honour exactly raise UnsupportedOperatorError naming the node: a model either converts
faithfully or not at all.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from ..errors import UnsupportedOperatorError
from .convert import NHWC, Context, attrs, identity, inverse
from .builder import options, schema

BOP = schema.BuiltinOperator
ACT = schema.ActivationFunctionType
PAD = schema.Padding
CONVERTERS: dict = {}


def converter(*op_types):
    def register(fn):
        for t in op_types:
            CONVERTERS[t] = fn
        return fn

    return register


def _fail(node, why: str):
    raise UnsupportedOperatorError(f"node '{node.name}' ({node.op_type}): {why}")


def _out_shape(ctx: Context, name: str, node) -> tuple[int, ...]:
    if name in ctx.shapes and all(d > 0 for d in ctx.shapes[name][0]):
        return ctx.shapes[name][0]
    _fail(node, f"output '{name}' has no static shape after shape inference")


# ---------------------------------------------------------------------------------------
# fused activations and padding
# ---------------------------------------------------------------------------------------

def _clip_bounds(ctx: Context, node):
    a = attrs(node)
    lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
    if len(node.input) > 1 and node.input[1]:
        c = ctx.const(node.input[1])
        if c is None:
            return None
        lo = float(c)
    if len(node.input) > 2 and node.input[2]:
        c = ctx.const(node.input[2])
        if c is None:
            return None
        hi = float(c)
    return float(lo), float(hi)


def _activation_of(ctx: Context, node) -> int | None:
    """The TFLite fused activation equivalent to `node`, if it is one."""
    if node.op_type == "Relu":
        return ACT.RELU
    if node.op_type == "Clip":
        b = _clip_bounds(ctx, node)
        if b == (0.0, 6.0):
            return ACT.RELU6
        if b == (0.0, np.inf):
            return ACT.RELU
        if b == (-1.0, 1.0):
            return ACT.RELU_N1_TO_1
    return None


def take_activation(ctx: Context, node) -> tuple[int, str]:
    """If the node's only consumer is an activation TFLite can fuse, absorb it.

    Returns (activation enum, ONNX name the fused op's output should carry)."""
    out = node.output[0]
    user = ctx.sole_consumer(out)
    if user is not None and user.input[0] == out:
        act = _activation_of(ctx, user)
        if act is not None:
            ctx.skip.add(id(user))
            return act, user.output[0]
    return ACT.NONE, out


def _same_pads(size, k, s, d):
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def _pads_2d(node, in_hw, kernel, strides, dilations):
    """Return (tflite padding, explicit [[top,bottom],[left,right]] or None)."""
    a = attrs(node)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for i in range(2):
            before, after = _same_pads(in_hw[i], kernel[i], strides[i], dilations[i])
            pads.append((after, before) if auto == "SAME_LOWER" else (before, after))
    elif auto == "VALID":
        pads = [(0, 0), (0, 0)]
    else:
        p = a.get("pads", [0, 0, 0, 0])
        pads = [(p[0], p[2]), (p[1], p[3])]
    if all(x == 0 for pr in pads for x in pr):
        return PAD.VALID, None
    if all(tuple(pads[i]) == _same_pads(in_hw[i], kernel[i], strides[i], dilations[i]) for i in range(2)):
        return PAD.SAME, None
    return PAD.VALID, pads


def _explicit_pad(ctx: Context, x_idx: int, pads, name: str, mode: str = "constant", value: float = 0.0) -> int:
    n, h, w, c = ctx.b.shape_of(x_idx)
    paddings = np.asarray([[0, 0], list(pads[0]), list(pads[1]), [0, 0]], np.int32)
    out = ctx.b.tensor(f"{name}_padded", (n, h + sum(pads[0]), w + sum(pads[1]), c))
    if mode == "symmetric":
        ctx.b.op(BOP.MIRROR_PAD, [x_idx, ctx.b.const(f"{name}_paddings", paddings)], [out],
                 *options("MirrorPadOptions", mode=schema.MirrorPadMode.SYMMETRIC))
    elif value == 0.0:
        ctx.b.op(BOP.PAD, [x_idx, ctx.b.const(f"{name}_paddings", paddings)], [out], *options("PadOptions"))
    else:
        ctx.b.op(BOP.PADV2, [x_idx, ctx.b.const(f"{name}_paddings", paddings),
                             ctx.b.const(f"{name}_pad_value", np.asarray([value], np.float32))], [out],
                 *options("PadV2Options"))
    return out


def _edge_pad(ctx: Context, x_idx: int, pads, name: str) -> int:
    """Replicate the border rows/columns: exact padding for max-pooling (every ONNX window
    holds a real border element), with no lowest-float fill, which would spoil int8
    calibration and which LiteRT's quantiser leaves float in PADV2. A SYMMETRIC mirror pad
    of width w replicates the border while it already holds w equal values, so mirror
    pads of widths 1, 2, 4 … build it."""
    remaining, run = [list(p) for p in pads], [[1, 1], [1, 1]]
    while any(r for side in remaining for r in side):
        step = [[min(remaining[i][j], run[i][j]) for j in range(2)] for i in range(2)]
        x_idx = _explicit_pad(ctx, x_idx, step, name, mode="symmetric")
        for i in range(2):
            for j in range(2):
                remaining[i][j] -= step[i][j]
                run[i][j] += step[i][j]
    return x_idx


# ---------------------------------------------------------------------------------------
# convolution, fully connected
# ---------------------------------------------------------------------------------------

def _weight_and_bias(ctx: Context, node, out_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D convolution's constant weight, and its bias (zeros when absent)."""
    w = ctx.require_const(node.input[1], node, "the weight").astype(np.float32)
    if w.ndim != 4:
        _fail(node, f"only 2-D {node.op_type} is supported (weight rank {w.ndim})")
    if len(node.input) > 2 and node.input[2]:
        return w, ctx.require_const(node.input[2], node, "the bias").astype(np.float32)
    return w, np.zeros(w.shape[out_axis], np.float32)


@converter("Conv")
def conv(ctx: Context, node):
    a = attrs(node)
    x, w_name = node.input[0], node.input[1]
    w, bias = _weight_and_bias(ctx, node, out_axis=0)
    n, c, h, wd = ctx.shape(x)
    m, cg, kh, kw = w.shape
    group = a.get("group", 1)
    strides = a.get("strides", [1, 1])
    dil = a.get("dilations", [1, 1])
    padding, explicit = _pads_2d(node, (h, wd), (kh, kw), strides, dil)
    xin = ctx.get(x, NHWC)
    if explicit:
        xin = _explicit_pad(ctx, xin, explicit, node.name or w_name)
    act, out_name = take_activation(ctx, node)
    out_shape = _out_shape(ctx, node.output[0], node)
    conv_opts = dict(padding=padding, strideH=strides[0], strideW=strides[1],
                     dilationHFactor=dil[0], dilationWFactor=dil[1], fusedActivationFunction=act)
    if group == 1:
        out = ctx.output(out_name, out_shape, NHWC)
        ctx.b.op(BOP.CONV_2D, [xin, ctx.b.const(f"{w_name}_ohwi", np.ascontiguousarray(w.transpose(0, 2, 3, 1))),
                               ctx.b.const(f"{w_name}_bias", bias)], [out], *options("Conv2DOptions", **conv_opts))
    elif group == c and cg == 1:
        out = ctx.output(out_name, out_shape, NHWC)
        filt = np.ascontiguousarray(w.reshape(m, kh, kw).transpose(1, 2, 0)[None])  # [1, kh, kw, M]
        ctx.b.op(BOP.DEPTHWISE_CONV_2D, [xin, ctx.b.const(f"{w_name}_1hwo", filt), ctx.b.const(f"{w_name}_bias", bias)],
                 [out], *options("DepthwiseConv2DOptions", depthMultiplier=m // c, **conv_opts))
    else:
        # Grouped convolution as split → per-group CONV_2D → concat: exact, and runs on
        # every TFLite kernel set (the builtin kernel's grouped support varies by version).
        # The activation is fused into each group's conv: LiteRT's float CONCATENATION
        # kernel ignores its fusedActivationFunction.
        in_shape = ctx.b.shape_of(xin)
        parts = [ctx.b.tensor(f"{node.name}_in{g}", (*in_shape[:3], cg)) for g in range(group)]
        ctx.b.op(BOP.SPLIT, [ctx.b.const(f"{node.name}_axis", np.asarray(3, np.int32)), xin], parts,
                 *options("SplitOptions", numSplits=group))
        mg = m // group
        outs = []
        for g in range(group):
            o = ctx.b.tensor(f"{node.name}_out{g}", (out_shape[0], out_shape[2], out_shape[3], mg))
            wg = np.ascontiguousarray(w[g * mg:(g + 1) * mg].transpose(0, 2, 3, 1))
            ctx.b.op(BOP.CONV_2D, [parts[g], ctx.b.const(f"{w_name}_g{g}", wg),
                                   ctx.b.const(f"{w_name}_bias_g{g}", bias[g * mg:(g + 1) * mg])], [o],
                     *options("Conv2DOptions", **conv_opts))
            outs.append(o)
        out = ctx.output(out_name, out_shape, NHWC)
        ctx.b.op(BOP.CONCATENATION, outs, [out], *options("ConcatenationOptions", axis=3))


@converter("ConvTranspose")
def conv_transpose(ctx: Context, node):
    a = attrs(node)
    x, w_name = node.input[0], node.input[1]
    w, bias = _weight_and_bias(ctx, node, out_axis=1)
    if a.get("group", 1) != 1:
        _fail(node, "grouped ConvTranspose is not supported")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        _fail(node, "dilated ConvTranspose is not supported (TFLite TRANSPOSE_CONV has no dilation)")
    auto = a.get("auto_pad", b"NOTSET")
    if (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", "VALID"):
        _fail(node, "auto_pad SAME_* is not supported; export with explicit pads")
    cin, m, kh, kw = w.shape
    n, _, h, wd = ctx.shape(x)
    s = a.get("strides", [1, 1])
    out_shape = _out_shape(ctx, node.output[0], node)
    oh, ow = out_shape[2], out_shape[3]
    valid = ((h - 1) * s[0] + kh, (wd - 1) * s[1] + kw)  # the un-padded transposed convolution
    p = _transpose_crop_begin(node, a, valid, (oh, ow))
    # output_padding may reach past the VALID output: TRANSPOSE_CONV then writes a larger
    # output whose extra rows/columns hold only the bias, as in ONNX.
    full = (n, max(valid[0], p[0] + oh), max(valid[1], p[1] + ow), m)
    xin = ctx.get(x, NHWC)
    act, out_name = take_activation(ctx, node)
    cropped = tuple(p) != (0, 0) or (oh, ow) != full[1:3]
    full_t = ctx.b.tensor(f"{node.name}_full", full) if cropped else None
    out = ctx.output(out_name, out_shape, NHWC)
    ctx.b.op(BOP.TRANSPOSE_CONV,
             [ctx.b.const(f"{node.name}_oshape", np.asarray(full, np.int32)),
              ctx.b.const(f"{w_name}_ohwi", np.ascontiguousarray(w.transpose(1, 2, 3, 0))), xin,
              ctx.b.const(f"{w_name}_bias", bias)],
             [full_t if cropped else out],
             # The activation is element-wise, so applying it before the crop is exact.
             *options("TransposeConvOptions", padding=PAD.VALID, strideH=s[0], strideW=s[1],
                      fusedActivationFunction=act))
    if cropped:
        ctx.b.op(BOP.SLICE, [full_t, ctx.b.const("begin", np.asarray([0, p[0], p[1], 0], np.int32)),
                             ctx.b.const("size", np.asarray([n, oh, ow, m], np.int32))], [out], *options("SliceOptions"))


def _transpose_crop_begin(node, a, valid, out_hw) -> list[int]:
    """Where the ONNX output starts inside TRANSPOSE_CONV's VALID output (the pads at the start)."""
    if "output_shape" not in a:
        return list(a.get("pads", [0, 0, 0, 0])[:2])
    # With output_shape, ONNX ignores `pads` and derives them: the total padding is split
    # with the larger half at the start (auto_pad NOTSET).
    op_ = a.get("output_padding", [0, 0])
    total = [valid[i] + op_[i] - out_hw[i] for i in range(2)]
    if min(total) < 0:
        _fail(node, "an output_shape larger than the transposed convolution's output is not supported")
    return [t - t // 2 for t in total]


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
        _fail(node, "transA=1 is not supported")
    b = ctx.require_const(node.input[1], node, "B").astype(np.float32)
    weight = b if a.get("transB", 0) else b.T  # [out, in]
    weight = weight * a.get("alpha", 1.0)
    bias = None
    if len(node.input) > 2 and node.input[2]:
        c = ctx.require_const(node.input[2], node, "C").astype(np.float32) * a.get("beta", 1.0)
        if c.size not in (1, weight.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
            _fail(node, f"C of shape {list(c.shape)} is not a per-output bias")
        bias = np.broadcast_to(c.reshape(-1), (weight.shape[0],)).copy()
    x_idx = ctx.get(node.input[0], identity(2))
    _fully_connected(ctx, node, x_idx, weight, bias, _out_shape(ctx, node.output[0], node))


@converter("MatMul")
def matmul(ctx: Context, node):
    a_name, b_name = node.input
    b = ctx.const(b_name)
    out_shape = _out_shape(ctx, node.output[0], node)
    if b is not None and b.ndim == 2:
        rank = len(ctx.shape(a_name))
        # keep_num_dims keeps every axis but the last, also for a 1-D `a` (ONNX drops its batch).
        _fully_connected(ctx, node, ctx.get(a_name, identity(rank)), b.T, None, out_shape, keep_dims=rank != 2)
        return
    ra, rb = len(ctx.shape(a_name)), len(ctx.onnx_shape(b_name))
    if ra < 2 or rb < 2:
        _fail(node, "MatMul with 1-D operands is not supported")
    out = ctx.output(node.output[0], out_shape)
    ctx.b.op(BOP.BATCH_MATMUL, [ctx.get(a_name, identity(ra)), ctx.get(b_name, identity(rb))], [out],
             *options("BatchMatMulOptions"))


# ---------------------------------------------------------------------------------------
# element-wise
# ---------------------------------------------------------------------------------------

def aligned(ctx: Context, name: str, rank: int, perm) -> int:
    """`name` broadcast-ready against a rank-`rank` tensor laid out with `perm`."""
    v = ctx.value(name)
    if v.const is not None:
        return _aligned_const(ctx, name, v.const, rank, perm)
    if v.rank == rank:
        return ctx.get(name, perm)
    full = (1,) * (rank - v.rank) + v.shape
    src = ctx.get(name, identity(v.rank))
    expanded = ctx.b.tensor(f"{name}_rank{rank}", full, ctx._np_dtype(src))
    ctx.reshape_to(src, expanded, full)
    from .convert import relative

    return ctx.relayout(expanded, full, relative(identity(rank), perm), f"{name}_rank{rank}")


def _aligned_const(ctx: Context, name: str, const: np.ndarray, rank: int, perm) -> int:
    c = const.reshape((1,) * (rank - const.ndim) + const.shape)
    if c.size == 1:
        return ctx.b.const(name, c.reshape(()).astype(np.float32) if c.dtype.kind == "f" else c.reshape(()))
    data = np.ascontiguousarray(c.transpose(perm))
    return ctx.b.const(name, data.astype(np.float32) if data.dtype.kind == "f" else data)


def _layout_for(ctx: Context, names) -> tuple[int, tuple[int, ...]]:
    """Rank and layout for an element-wise op: those of its highest-rank variable input,
    unless a constant has a higher rank (then the output's rank, in ONNX layout)."""
    variables = [n for n in names if ctx.value(n).const is None]
    if not variables:
        raise AssertionError("element-wise op on constants only should have been folded")
    best = max(variables, key=lambda n: ctx.value(n).rank)
    rank = max(ctx.value(n).rank for n in names)
    return (rank, ctx.perm_of(best)) if ctx.value(best).rank == rank else (rank, identity(rank))


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
        _fail(node, "only two-input Max/Min is supported")
    if node.op_type == "Pow":
        e = ctx.const(node.input[1])
        if e is not None and e.size == 1 and float(e) == 2.0:
            rank, perm = _layout_for(ctx, node.input[:1])
            out = ctx.output(node.output[0], _out_shape(ctx, node.output[0], node), perm)
            x = ctx.get(node.input[0], perm)
            ctx.b.op(BOP.MUL, [x, x], [out], *options("MulOptions"))
            return
    op, opts_name, fusable = _BINARY[node.op_type]
    rank, perm = _layout_for(ctx, node.input)
    ins = [aligned(ctx, n, rank, perm) for n in node.input]
    divisor = ctx.const(node.input[1]) if node.op_type == "Div" else None
    if divisor is not None and divisor.dtype.kind == "f":
        # Division by a constant as multiplication by its reciprocal (within an ulp):
        # LiteRT cannot quantise DIV to int8, MUL it can.
        op, opts_name = BOP.MUL, "MulOptions"
        reciprocal = (1 / divisor.astype(np.float64)).astype(divisor.dtype)
        ins[1] = _aligned_const(ctx, f"{node.input[1]}_reciprocal", reciprocal, rank, perm)
    act, out_name = take_activation(ctx, node) if fusable else (ACT.NONE, node.output[0])
    out = ctx.output(out_name, _out_shape(ctx, node.output[0], node), perm)
    if opts_name is None:
        ctx.b.op(op, ins, [out])
    elif fusable:
        ctx.b.op(op, ins, [out], *options(opts_name, fusedActivationFunction=act))
    else:
        ctx.b.op(op, ins, [out], *options(opts_name))


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
}


@converter(*_UNARY)
def unary(ctx: Context, node):
    if node.op_type == "Elu" and attrs(node).get("alpha", 1.0) != 1.0:
        _fail(node, "Elu with alpha != 1 is not supported")
    x = node.input[0]
    perm = ctx.perm_of(x)
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    ctx.b.op(_UNARY[node.op_type], [ctx.get(x, perm)], [out])


@converter("LeakyRelu")
def leaky_relu(ctx: Context, node):
    x = node.input[0]
    perm = ctx.perm_of(x)
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    ctx.b.op(BOP.LEAKY_RELU, [ctx.get(x, perm)], [out], *options("LeakyReluOptions", alpha=attrs(node).get("alpha", 0.01)))


@converter("Clip")
def clip(ctx: Context, node):
    bounds = _clip_bounds(ctx, node)
    if bounds is None:
        _fail(node, "min/max must be constants")
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
        nxt = out if not np.isfinite(hi) else ctx.b.tensor(f"{node.name}_max", ctx.b.shape_of(xin))
        ctx.b.op(BOP.MAXIMUM, [cur, ctx.b.const("clip_lo", np.asarray(lo, np.float32))], [nxt], *options("MaximumMinimumOptions"))
        cur = nxt
    if np.isfinite(hi):
        ctx.b.op(BOP.MINIMUM, [cur, ctx.b.const("clip_hi", np.asarray(hi, np.float32))], [out], *options("MaximumMinimumOptions"))
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
    ctx.b.op(BOP.MINIMUM, [shifted, ctx.b.const("one", np.asarray(1.0, np.float32))], [capped], *options("MaximumMinimumOptions"))
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    ctx.b.op(BOP.MAXIMUM, [capped, ctx.b.const("zero", np.asarray(0.0, np.float32))], [out], *options("MaximumMinimumOptions"))


@converter("Gelu")
def gelu(ctx: Context, node):
    approx = attrs(node).get("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    _emit_gelu(ctx, node.input[0], node.output[0], approx == "tanh")


def _emit_gelu(ctx: Context, x: str, out_name: str, tanh: bool):
    perm = ctx.perm_of(x)
    out = ctx.output(out_name, ctx.shape(x), perm)
    ctx.b.op(BOP.GELU, [ctx.get(x, perm)], [out], *options("GeluOptions", approximate=tanh))


@converter("Softmax", "LogSoftmax")
def softmax(ctx: Context, node):
    x = node.input[0]
    rank = len(ctx.shape(x))
    axis = attrs(node).get("axis", -1) % rank
    perm = ctx.perm_of(x)
    if inverse(perm)[axis] != rank - 1:
        # TFLite normalises over the last axis: choose a layout that puts `axis` last.
        perm = tuple(a for a in perm if a != axis) + (axis,)
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    if node.op_type == "Softmax":
        ctx.b.op(BOP.SOFTMAX, [ctx.get(x, perm)], [out], *options("SoftmaxOptions", beta=1.0))
    else:
        ctx.b.op(BOP.LOG_SOFTMAX, [ctx.get(x, perm)], [out], *options("LogSoftmaxOptions"))


@converter("BatchNormalization")
def batch_norm(ctx: Context, node):
    if attrs(node).get("training_mode", 0):
        _fail(node, "training_mode=1 (batch statistics) is not supported; export the model in eval mode")
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
    ctx.b.op(BOP.MUL, [xin, ctx.b.const("bn_mul", np.ascontiguousarray(mul.reshape(cshape).transpose(perm)).astype(np.float32))],
             [mid], *options("MulOptions"))
    act, out_name = take_activation(ctx, node)
    out = ctx.output(out_name, ctx.shape(x), perm)
    ctx.b.op(BOP.ADD, [mid, ctx.b.const("bn_add", np.ascontiguousarray(add.reshape(cshape).transpose(perm)).astype(np.float32))],
             [out], *options("AddOptions", fusedActivationFunction=act))


# ---------------------------------------------------------------------------------------
# pooling and reductions
# ---------------------------------------------------------------------------------------

def _non_negative(ctx: Context, name: str) -> bool:
    """Whether an ONNX value is ≥ 0 by construction (the output of a ReLU-like op)."""
    producer = next((n for n in ctx.onnx.graph.node if name in n.output), None)
    if producer is None:
        return False
    if producer.op_type in ("Relu", "Sigmoid", "Softmax", "Abs", "Exp", "HardSigmoid"):
        return True
    if producer.op_type == "Clip":
        bounds = _clip_bounds(ctx, producer)
        return bounds is not None and bounds[0] >= 0
    if producer.op_type in ("MaxPool", "Identity", "Dropout", "Reshape", "Flatten", "Transpose", "Concat"):
        return all(_non_negative(ctx, i) for i in producer.input[:1 if producer.op_type != "Concat" else None] if i)
    return False


@converter("MaxPool", "AveragePool")
def pool(ctx: Context, node):
    a = attrs(node)
    if len(node.output) > 1 and node.output[1]:
        _fail(node, "MaxPool indices output is not supported")
    x = node.input[0]
    if len(ctx.shape(x)) != 4:
        _fail(node, "only 2-D pooling is supported")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        _fail(node, "dilated pooling is not supported")
    k = a["kernel_shape"]
    s = a.get("strides", [1, 1])
    n, c, h, w = ctx.shape(x)
    out_shape = _out_shape(ctx, node.output[0], node)
    padding, explicit = _pads_2d(node, (h, w), k, s, (1, 1))
    if padding == PAD.SAME and node.op_type == "AveragePool" and a.get("count_include_pad", 0):
        # TFLite's SAME average excludes the padding; to count it, pad with zeros explicitly.
        padding, explicit = PAD.VALID, [_same_pads((h, w)[i], k[i], s[i], 1) for i in range(2)]
    # ceil_mode: extra rows/cols at the end that a floor-mode pool would not produce.
    extra = [max((out_shape[2 + i] - 1) * s[i] + k[i] - ((h, w)[i] + sum((explicit or [(0, 0), (0, 0)])[i])), 0)
             if padding == PAD.VALID else 0 for i in range(2)]
    if padding == PAD.SAME and a.get("ceil_mode", 0):
        sizes = [-(-(h, w)[i] // s[i]) for i in range(2)]
        if list(out_shape[2:]) != sizes:
            _fail(node, "ceil_mode with this padding is not supported")
    if any(extra):
        explicit = [((explicit or [(0, 0), (0, 0)])[i][0], (explicit or [(0, 0), (0, 0)])[i][1] + extra[i]) for i in range(2)]
    xin = ctx.get(x, NHWC)
    is_max = node.op_type == "MaxPool"
    if explicit:
        if is_max:
            # Zero padding is exact for max-pooling a non-negative input (every window holds
            # a real value ≥ 0) and runs in XNNPACK; otherwise replicate the edge exactly.
            xin = _explicit_pad(ctx, xin, explicit, node.name) if _non_negative(ctx, x) else \
                _edge_pad(ctx, xin, explicit, node.name)
        else:
            if any(extra):
                _fail(node, "AveragePool with ceil_mode that adds windows is not supported")
            if not a.get("count_include_pad", 0):
                _fail(node, "AveragePool with explicit (non-SAME) padding and count_include_pad=0 is not supported")
            xin = _explicit_pad(ctx, xin, explicit, node.name)
    act, out_name = take_activation(ctx, node)
    out = ctx.output(out_name, out_shape, NHWC)
    ctx.b.op(BOP.MAX_POOL_2D if is_max else BOP.AVERAGE_POOL_2D, [xin], [out],
             *options("Pool2DOptions", padding=padding, strideH=s[0], strideW=s[1], filterHeight=k[0], filterWidth=k[1],
                      fusedActivationFunction=act))


def _reduce(ctx: Context, node, op, x: str, axes, keepdims: bool, out_name: str):
    rank = len(ctx.shape(x))
    axes = sorted({a % rank for a in axes})
    perm = ctx.perm_of(x)
    inv = inverse(perm)
    t_axes = sorted(inv[a] for a in axes)
    out_shape = _out_shape(ctx, out_name, node)
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


# ---------------------------------------------------------------------------------------
# shape and layout
# ---------------------------------------------------------------------------------------

def _reshape(ctx: Context, node, x: str, out_shape):
    rank = len(ctx.shape(x))
    xin = ctx.get(x, identity(rank))
    out = ctx.output(node.output[0], out_shape)
    ctx.reshape_to(xin, out, out_shape)


@converter("Reshape")
def reshape(ctx: Context, node):
    _reshape(ctx, node, node.input[0], _out_shape(ctx, node.output[0], node))


@converter("Flatten")
def flatten(ctx: Context, node):
    shape = ctx.shape(node.input[0])
    axis = attrs(node).get("axis", 1) % (len(shape) or 1)
    _reshape(ctx, node, node.input[0], (int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))))


@converter("Squeeze", "Unsqueeze")
def squeeze(ctx: Context, node):
    _reshape(ctx, node, node.input[0], _out_shape(ctx, node.output[0], node))


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
    from .convert import Value

    ctx.values[node.output[0]] = Value(out_shape, v.dtype, r, idx, cache={r: idx})


@converter("Concat")
def concat(ctx: Context, node):
    axis = attrs(node)["axis"]
    names = [n for n in node.input if n]
    rank, perm = _layout_for(ctx, names)
    axis %= rank
    ins = [ctx.get(n, perm) for n in names]
    # No activation fusion: LiteRT's float CONCATENATION kernel ignores fusedActivationFunction.
    out = ctx.output(node.output[0], _out_shape(ctx, node.output[0], node), perm)
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
    outs = [ctx.output(o, _out_shape(ctx, o, node), perm) for o in node.output]
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
    axes = ctx.require_const(node.input[3], node, "axes").reshape(-1).tolist() if len(node.input) > 3 and node.input[3] \
        else list(range(len(starts)))
    steps = ctx.require_const(node.input[4], node, "steps").reshape(-1).tolist() if len(node.input) > 4 and node.input[4] \
        else [1] * len(starts)
    perm = ctx.perm_of(x)
    inv = inverse(perm)
    begin, end, stride = [0] * rank, list(shape), [1] * rank
    end_mask = 0
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax %= rank
        if sp == 0:
            _fail(node, "a step of 0 is invalid")
        b_, e_, s_ = slice(int(st), int(max(min(en, 2**62), -(2**62))), int(sp)).indices(shape[ax])
        begin[ax], end[ax], stride[ax] = b_, e_, s_
        if s_ < 0 and e_ < 0:
            end_mask |= 1 << inv[ax]
    t = lambda v: np.asarray([v[perm[i]] for i in range(rank)], np.int32)
    out = ctx.output(node.output[0], _out_shape(ctx, node.output[0], node), perm)
    ctx.b.op(BOP.STRIDED_SLICE, [ctx.get(x, perm), ctx.b.const("begin", t(begin)), ctx.b.const("end", t(end)),
                                 ctx.b.const("strides", t(stride))], [out],
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
        _fail(node, "negative pads (cropping) are not supported")
    perm = ctx.perm_of(x)
    paddings = np.asarray([[pads[perm[i]], pads[perm[i] + rank]] for i in range(rank)], np.int32)
    xin = ctx.get(x, perm)
    out = ctx.output(node.output[0], _out_shape(ctx, node.output[0], node), perm)
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
        _fail(node, f"pad mode '{mode}' is not supported (constant, reflect are)")


# ONNX (coordinate_transformation_mode, nearest_mode) → TFLite RESIZE_NEAREST_NEIGHBOR
# (align_corners, half_pixel_centers) choosing the same source pixel at every scale.
_NEAREST = {
    ("asymmetric", "floor"): (False, False),  # both floor(x * in / out)
    ("tf_half_pixel_for_nn", "floor"): (False, True),  # both floor((x + 0.5) * in / out)
    ("half_pixel", "round_prefer_ceil"): (False, True),  # floor((x + 0.5) * in / out - 0.5 + 0.5)
    ("align_corners", "round_prefer_ceil"): (True, False),  # round half up x * (in - 1) / (out - 1)
}


def _nearest_flags(ctm: str, nearest_mode: str, in_hw, out_hw):
    """TFLite flags equivalent to an ONNX nearest resize, or None."""
    if (ctm, nearest_mode) in _NEAREST:
        return _NEAREST[ctm, nearest_mode]
    # At integer up-scaling factors s, two more modes pick floor(x / s): half_pixel rounds
    # (x + 0.5) / s - 0.5, which lies strictly within 0.5 of it; asymmetric rounds x / s,
    # whose fraction (s - 1) / s stays at or below the tie 0.5 only while s <= 2.
    factors = [o // i if o % i == 0 else 0 for i, o in zip(in_hw, out_hw)]
    if all(factors) and nearest_mode == "round_prefer_floor":
        if ctm == "half_pixel" or (ctm == "asymmetric" and max(factors) <= 2):
            return False, False
    return None


def _check_resize_scales(ctx: Context, node, shape, out_shape) -> None:
    """ONNX maps coordinates with the given scales, TFLite with out / in: they must agree."""
    a = attrs(node)
    if "scales" in a:  # Upsample-7
        scales = np.asarray(a["scales"], np.float32)
    else:
        # Upsample-9 and Resize-10 take (X, scales); Resize-11+ (X, roi, scales, sizes).
        name = node.input[1] if len(node.input) == 2 else (node.input[2] if len(node.input) > 2 else "")
        if not name:
            return
        scales = ctx.require_const(name, node, "scales").reshape(-1)
    axes = [ax % 4 for ax in a.get("axes", range(4))]
    for ax, sc in zip(axes, scales.tolist()):
        if ax >= 2 and not math.isclose(sc, out_shape[ax] / shape[ax], rel_tol=1e-6):
            _fail(node, f"scale {sc} does not map axis {ax} size {shape[ax]} exactly onto {out_shape[ax]} "
                        "(TFLite resizes by the size ratio); give sizes or an exact scale")


def _resize_modes(ctx: Context, node, upsampling: bool) -> tuple[str, str, str]:
    """(mode, coordinate_transformation_mode, nearest_mode) with the op version's defaults."""
    a = attrs(node)
    get = lambda k, d: (a.get(k, d).decode() if isinstance(a.get(k, d), bytes) else a.get(k, d))
    opset = next((o.version for o in ctx.onnx.opset_import if o.domain in ("", "ai.onnx")), 0)
    if node.op_type == "Upsample" or opset < 11:
        # Upsample and Resize-10 map asymmetrically; onnxruntime floors when upsampling and
        # ceils when downsampling (its "simple" nearest mode).
        return get("mode", "nearest"), "asymmetric", "floor" if upsampling else "ceil"
    return get("mode", "nearest"), get("coordinate_transformation_mode", "half_pixel"), \
        get("nearest_mode", "round_prefer_floor")


@converter("Resize", "Upsample")
def resize(ctx: Context, node):
    a = attrs(node)
    x = node.input[0]
    shape = ctx.shape(x)
    if len(shape) != 4:
        _fail(node, "only 4-D (N, C, H, W) resize is supported")
    out_shape = _out_shape(ctx, node.output[0], node)
    if out_shape[:2] != shape[:2]:
        _fail(node, "resizing the batch or channel axis is not supported")
    _check_resize_scales(ctx, node, shape, out_shape)
    mode, ctm, nearest_mode = _resize_modes(ctx, node, all(out_shape[i] >= shape[i] for i in (2, 3)))
    if a.get("antialias", 0) and (out_shape[2] < shape[2] or out_shape[3] < shape[3]):
        _fail(node, "antialiased downsampling is not supported")
    size = ctx.b.const("size", np.asarray(out_shape[2:], np.int32))
    out = ctx.output(node.output[0], out_shape, NHWC)
    xin = ctx.get(x, NHWC)
    if mode == "linear":
        if ctm == "pytorch_half_pixel" and min(out_shape[2:]) > 1:
            ctm = "half_pixel"
        flags = {"half_pixel": (False, True), "align_corners": (True, False), "asymmetric": (False, False)}
        if ctm not in flags:
            _fail(node, f"linear resize with coordinate_transformation_mode '{ctm}' is not supported")
        ac, hp = flags[ctm]
        ctx.b.op(BOP.RESIZE_BILINEAR, [xin, size], [out],
                 *options("ResizeBilinearOptions", alignCorners=ac, halfPixelCenters=hp))
    elif mode == "nearest":
        flags = _nearest_flags(ctm, nearest_mode, shape[2:], out_shape[2:])
        if flags is None:
            _fail(node, f"nearest resize with coordinate_transformation_mode '{ctm}' and nearest_mode '{nearest_mode}' "
                        f"from {list(shape[2:])} to {list(out_shape[2:])} is not supported")
        ctx.b.op(BOP.RESIZE_NEAREST_NEIGHBOR, [xin, size], [out],
                 *options("ResizeNearestNeighborOptions", alignCorners=flags[0], halfPixelCenters=flags[1]))
    else:
        _fail(node, f"resize mode '{mode}' is not supported (nearest, linear are)")


@converter("Identity", "Dropout")
def identity_op(ctx: Context, node):
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        training = ctx.const(node.input[2])
        if training is None or bool(training):
            _fail(node, "training_mode must be a constant false (inference); export the model in eval mode")
    mask = node.output[1] if node.op_type == "Dropout" and len(node.output) > 1 else ""
    if mask and (ctx.consumers.get(mask) or mask in ctx.graph_outputs):
        _fail(node, "reading the mask output is not supported")
    ctx.alias(node.output[0], node.input[0])


@converter("Cast")
def cast(ctx: Context, node):
    to = onnx.helper.tensor_dtype_to_np_dtype(attrs(node)["to"])
    if np.dtype(to) != ctx.value(node.input[0]).dtype:
        _fail(node, f"casting {ctx.value(node.input[0]).dtype} to {np.dtype(to)} is not supported")
    ctx.alias(node.output[0], node.input[0])


# ---------------------------------------------------------------------------------------
# constants and patterns
# ---------------------------------------------------------------------------------------

def fold_constant(ctx: Context, node) -> bool:
    """Evaluate a node whose inputs are all constants with ONNX's reference evaluator."""
    if node.op_type == "Constant":
        from onnx import numpy_helper

        a = {x.name: x for x in node.attribute}
        if "value" in a:
            ctx.bind_const(node.output[0], numpy_helper.to_array(a["value"].t))
            return True
    ins = [i for i in node.input if i]
    if node.op_type == "Constant" or (ins and all(ctx.const(i) is not None for i in ins)):
        from onnx.reference import ReferenceEvaluator

        graph_inputs = [onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(ctx.const(i).dtype),
                                                           ctx.const(i).shape) for i in ins]
        g = onnx.helper.make_graph([node], "fold", graph_inputs,
                                   [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o])
        m = onnx.helper.make_model(g, opset_imports=ctx.onnx.opset_import)
        results = ReferenceEvaluator(m).run(None, {i: ctx.const(i) for i in ins})
        for o, r in zip([o for o in node.output if o], results):
            ctx.bind_const(o, np.asarray(r))
        return True
    return False


def rewrite_patterns(ctx: Context) -> None:
    """Recognise multi-node ONNX idioms with a single TFLite op (Gelu in its Erf form)."""
    producers = {o: n for n in ctx.onnx.graph.node for o in n.output}
    ctx.fused = {}

    def const_val(name):
        c = ctx.const(name)
        if c is None and name in producers and producers[name].op_type == "Constant":
            from onnx import numpy_helper

            c = numpy_helper.to_array(producers[name].attribute[0].t)
        return None if c is None or c.size != 1 else float(c)

    def other(n, name):
        return n.input[1] if n.input[0] == name else n.input[0]

    for erf in [n for n in ctx.onnx.graph.node if n.op_type == "Erf"]:
        scale_node = producers.get(erf.input[0])
        if scale_node is None or scale_node.op_type not in ("Div", "Mul"):
            continue
        x = scale_node.input[0]
        k = const_val(scale_node.input[1])
        if k is None or not (scale_node.op_type == "Div" and abs(k - math.sqrt(2)) < 1e-3
                             or scale_node.op_type == "Mul" and abs(k - 1 / math.sqrt(2)) < 1e-3):
            continue
        add = ctx.sole_consumer(erf.output[0])
        if add is None or add.op_type != "Add" or const_val(other(add, erf.output[0])) != 1.0:
            continue
        mul1 = ctx.sole_consumer(add.output[0])
        if mul1 is None or mul1.op_type != "Mul":
            continue
        partner = other(mul1, add.output[0])
        chain = [scale_node, erf, add, mul1]
        if partner == x:  # (x * (1 + erf)) * 0.5
            mul2 = ctx.sole_consumer(mul1.output[0])
            if mul2 is None or mul2.op_type != "Mul" or const_val(other(mul2, mul1.output[0])) != 0.5:
                continue
            chain.append(mul2)
        else:  # (x * 0.5) * (1 + erf)
            half = producers.get(partner)
            if half is None or half.op_type != "Mul" or x not in half.input or const_val(other(half, x)) != 0.5 \
                    or len(ctx.consumers.get(half.output[0], [])) != 1:
                continue
            chain.insert(0, half)
        if len(ctx.consumers.get(scale_node.output[0], [])) != 1:
            continue
        final = chain[-1]
        for n in chain[:-1]:
            ctx.skip.add(id(n))
        ctx.fused[id(final)] = (lambda x=x, out=final.output[0]: _emit_gelu(ctx, x, out, False))
