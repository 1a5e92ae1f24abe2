"""What the op-family modules share: the registry, error reporting, fused activations,
convolution/pooling padding, and broadcasting of element-wise operands.

`converter(*op_types)` registers a function `fn(ctx, node)` in `CONVERTERS` under each ONNX
op type; the family modules in this package use it, and `ops/__init__.py` imports them all.
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOperatorError
from ..builder import options, schema
from ..context import Context, attrs, identity, relative, tfl_array

BOP = schema.BuiltinOperator
ACT = schema.ActivationFunctionType
PAD = schema.Padding
CONVERTERS: dict = {}  # ONNX op type -> fn(ctx, node)


def converter(*op_types):
    def register(fn):
        for t in op_types:
            CONVERTERS[t] = fn
        return fn

    return register


def fail(node, why: str):
    raise UnsupportedOperatorError(f"node '{node.name}' ({node.op_type}): {why}")


def static_shape(ctx: Context, name: str, node) -> tuple[int, ...]:
    """The inferred shape of `node`'s output `name`, which must be fully static."""
    if name in ctx.shapes and all(d > 0 for d in ctx.shapes[name][0]):
        return ctx.shapes[name][0]
    fail(node, f"output '{name}' has no static shape after shape inference")


# ---------------------------------------------------------------------------------------
# fused activations
# ---------------------------------------------------------------------------------------

def clip_bounds(ctx: Context, node):
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
        b = clip_bounds(ctx, node)
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


# ---------------------------------------------------------------------------------------
# padding (convolution, pooling)
# ---------------------------------------------------------------------------------------

def same_pads(size, k, s, d):
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def pads_2d(node, in_hw, kernel, strides, dilations):
    """Return (tflite padding, explicit [[top,bottom],[left,right]] or None)."""
    a = attrs(node)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for i in range(2):
            before, after = same_pads(in_hw[i], kernel[i], strides[i], dilations[i])
            pads.append((after, before) if auto == "SAME_LOWER" else (before, after))
    elif auto == "VALID":
        pads = [(0, 0), (0, 0)]
    else:
        p = a.get("pads", [0, 0, 0, 0])
        pads = [(p[0], p[2]), (p[1], p[3])]
    if all(x == 0 for pr in pads for x in pr):
        return PAD.VALID, None
    if all(tuple(pads[i]) == same_pads(in_hw[i], kernel[i], strides[i], dilations[i]) for i in range(2)):
        return PAD.SAME, None
    return PAD.VALID, pads


def explicit_pad(ctx: Context, x_idx: int, pads, name: str, mode: str = "constant", value: float = 0.0) -> int:
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


def edge_pad(ctx: Context, x_idx: int, pads, name: str) -> int:
    """Replicate the border rows/columns: exact padding for max-pooling (every ONNX window
    holds a real border element), with no lowest-float fill, which would spoil int8
    calibration and which LiteRT's quantiser leaves float in PADV2. A SYMMETRIC mirror pad
    of width w replicates the border while it already holds w equal values, so mirror
    pads of widths 1, 2, 4 … build it."""
    remaining, run = [list(p) for p in pads], [[1, 1], [1, 1]]
    while any(r for side in remaining for r in side):
        step = [[min(remaining[i][j], run[i][j]) for j in range(2)] for i in range(2)]
        x_idx = explicit_pad(ctx, x_idx, step, name, mode="symmetric")
        for i in range(2):
            for j in range(2):
                remaining[i][j] -= step[i][j]
                run[i][j] += step[i][j]
    return x_idx


# ---------------------------------------------------------------------------------------
# element-wise operands
# ---------------------------------------------------------------------------------------

def aligned(ctx: Context, name: str, rank: int, perm) -> int:
    """`name` broadcast-ready against a rank-`rank` tensor laid out with `perm`."""
    v = ctx.value(name)
    if v.const is not None:
        return aligned_const(ctx, name, v.const, rank, perm)
    if v.rank == rank:
        return ctx.get(name, perm)
    full = (1,) * (rank - v.rank) + v.shape
    src = ctx.get(name, identity(v.rank))
    expanded = ctx.b.tensor(f"{name}_rank{rank}", full, ctx._np_dtype(src))
    ctx.reshape_to(src, expanded, full)
    return ctx.relayout(expanded, full, relative(identity(rank), perm), f"{name}_rank{rank}")


def aligned_const(ctx: Context, name: str, const: np.ndarray, rank: int, perm) -> int:
    c = const.reshape((1,) * (rank - const.ndim) + const.shape)
    if c.size == 1:
        return ctx.b.const(name, tfl_array(c.reshape(())))
    return ctx.b.const(name, tfl_array(np.ascontiguousarray(c.transpose(perm))))


def layout_for(ctx: Context, names) -> tuple[int, tuple[int, ...]]:
    """Rank and layout for an element-wise op: those of its highest-rank variable input,
    unless a constant has a higher rank (then the output's rank, in ONNX layout)."""
    variables = [n for n in names if ctx.value(n).const is None]
    if not variables:
        raise AssertionError("element-wise op on constants only should have been folded")
    best = max(variables, key=lambda n: ctx.value(n).rank)
    rank = max(ctx.value(n).rank for n in names)
    return (rank, ctx.perm_of(best)) if ctx.value(best).rank == rank else (rank, identity(rank))


def emit_elementwise(ctx: Context, node, op: int, opts_name: str | None = None, names=None, out_name=None,
                     **opts) -> int:
    """One broadcasting TFLite op over `names` (default: the node's inputs) into the node's
    output, in the layout of its highest-rank variable input."""
    names = [n for n in (names if names is not None else node.input) if n]
    out_name = out_name or node.output[0]
    rank, perm = layout_for(ctx, names)
    ins = [aligned(ctx, n, rank, perm) for n in names]
    out = ctx.output(out_name, static_shape(ctx, node.output[0], node), perm)
    if opts_name is None:
        ctx.b.op(op, ins, [out])
    else:
        ctx.b.op(op, ins, [out], *options(opts_name, **opts))
    return out
