"""Convolutions: ONNX Conv (plain, depthwise, grouped) and ConvTranspose, in NHWC, 2-D and 1-D.

Weights must be constants; they are re-laid out for TFLite (OHWI, 1HWO), padding becomes
SAME/VALID or an explicit PAD, and a following Relu/Clip is fused into the op. A 1-D
convolution ([N, C, L], rank-3 weight) runs as the 2-D one on [N, 1, L, C] data: `lift_1d`
rewrites its attributes for a height of 1, `input_nhwc`/`output_nhwc`/`bind_1d` reshape
around the op (the 1-D value itself lives as NLC, perm (0, 2, 1)). Pooling shares them.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..builder import options
from ..context import NHWC, Context, attrs
from ._common import BOP, PAD, converter, explicit_pad, fail, pads_2d, static_shape, take_activation

NLC = (0, 2, 1)
ONE_D = "n1lc"  # Value.cache key: the [N, 1, L, C] tensor a 1-D value was reshaped from (or to)
_PER_AXIS = ("kernel_shape", "strides", "dilations", "output_padding", "output_shape")


def lift_1d(node) -> onnx.NodeProto:
    """A copy of a 1-D conv/pool node whose attributes describe the same op on [N, C, 1, L]."""
    lifted = onnx.NodeProto()
    lifted.CopyFrom(node)
    del lifted.attribute[:]
    for k, v in attrs(node).items():
        if k in _PER_AXIS:
            v = [1, *v]
        elif k == "pads":
            v = [0, v[0], 0, v[1]]
        lifted.attribute.append(onnx.helper.make_attribute(k, v))
    return lifted


def shape_4d(shape) -> tuple[int, ...]:
    """The [N, C, 1, L] shape of a 1-D value (a 2-D value's shape unchanged)."""
    return tuple(shape) if len(shape) == 4 else (shape[0], shape[1], 1, shape[2])


def input_nhwc(ctx: Context, x: str) -> int:
    """`x` as an NHWC tensor: [N, H, W, C], or [N, 1, L, C] for a 1-D value (reshaped once)."""
    v = ctx.value(x)
    if v.rank == 4:
        return ctx.get(x, NHWC)
    if ONE_D not in v.cache:
        n, c, length = v.shape
        t = ctx.b.tensor(f"{x}_n1lc", (n, 1, length, c))
        ctx.reshape_to(ctx.get(x, NLC), t, (n, 1, length, c))
        v.cache[ONE_D] = t
    return v.cache[ONE_D]


def output_nhwc(ctx: Context, name: str, onnx_shape) -> int:
    """The NHWC tensor an op writes ONNX value `name` to: the value's own for 2-D, an
    [N, 1, L, C] one for 1-D, which `bind_1d` then binds (call it after emitting the op)."""
    if len(onnx_shape) == 4:
        return ctx.output(name, onnx_shape, NHWC)
    n, c, length = onnx_shape
    return ctx.b.tensor(f"{name}_n1lc", (n, 1, length, c))


def bind_1d(ctx: Context, name: str, t: int, onnx_shape) -> None:
    if len(onnx_shape) == 3:
        n, c, length = onnx_shape
        out = ctx.output(name, onnx_shape, NLC)
        ctx.reshape_to(t, out, (n, length, c))
        ctx.values[name].cache[ONE_D] = t  # the next 1-D conv/pool reads `t` directly


def _as_2d(ctx: Context, node):
    """(node with 2-D attributes, 2-D weight, whether the op is 1-D)."""
    w = ctx.require_const(node.input[1], node, "the weight").astype(np.float32)
    if w.ndim == 3 and len(ctx.shape(node.input[0])) == 3:
        return lift_1d(node), w[:, :, None, :], True
    if w.ndim != 4:
        fail(node, f"only 1-D and 2-D {node.op_type} are supported (weight rank {w.ndim})")
    return node, w, False


def _bias(ctx: Context, node, size: int) -> np.ndarray:
    if len(node.input) > 2 and node.input[2]:
        return ctx.require_const(node.input[2], node, "the bias").astype(np.float32)
    return np.zeros(size, np.float32)


@converter("Conv")
def conv(ctx: Context, node):
    node, w, _ = _as_2d(ctx, node)
    a = attrs(node)
    x, w_name = node.input[0], node.input[1]
    bias = _bias(ctx, node, w.shape[0])
    _, c, h, wd = shape_4d(ctx.shape(x))
    m, cg, kh, kw = w.shape
    group = a.get("group", 1)
    strides = a.get("strides", [1, 1])
    dil = a.get("dilations", [1, 1])
    padding, explicit = pads_2d(node, (h, wd), (kh, kw), strides, dil)
    xin = input_nhwc(ctx, x)
    if explicit:
        xin = explicit_pad(ctx, xin, explicit, node.name or w_name)
    act, out_name = take_activation(ctx, node)
    onnx_out = static_shape(ctx, node.output[0], node)
    out_shape = shape_4d(onnx_out)
    conv_opts = {"padding": padding, "strideH": strides[0], "strideW": strides[1],
                 "dilationHFactor": dil[0], "dilationWFactor": dil[1], "fusedActivationFunction": act}
    if group == 1:
        out = output_nhwc(ctx, out_name, onnx_out)
        ctx.b.op(BOP.CONV_2D, [xin, ctx.b.const(f"{w_name}_ohwi", np.ascontiguousarray(w.transpose(0, 2, 3, 1))),
                               ctx.b.const(f"{w_name}_bias", bias)], [out], *options("Conv2DOptions", **conv_opts))
    elif group == c and cg == 1:
        out = output_nhwc(ctx, out_name, onnx_out)
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
        out = output_nhwc(ctx, out_name, onnx_out)
        ctx.b.op(BOP.CONCATENATION, outs, [out], *options("ConcatenationOptions", axis=3))
    bind_1d(ctx, out_name, out, onnx_out)


@converter("ConvTranspose")
def conv_transpose(ctx: Context, node):
    node, w, _ = _as_2d(ctx, node)
    a = attrs(node)
    x, w_name = node.input[0], node.input[1]
    bias = _bias(ctx, node, w.shape[1])
    if a.get("group", 1) != 1:
        fail(node, "grouped ConvTranspose is not supported")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        fail(node, "dilated ConvTranspose is not supported (TFLite TRANSPOSE_CONV has no dilation)")
    auto = a.get("auto_pad", b"NOTSET")
    if (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", "VALID"):
        fail(node, "auto_pad SAME_* is not supported; export with explicit pads")
    _, m, kh, kw = w.shape
    n, _, h, wd = shape_4d(ctx.shape(x))
    s = a.get("strides", [1, 1])
    onnx_out = static_shape(ctx, node.output[0], node)
    oh, ow = shape_4d(onnx_out)[2:]
    valid = ((h - 1) * s[0] + kh, (wd - 1) * s[1] + kw)  # the un-padded transposed convolution
    p = _transpose_crop_begin(node, a, valid, (oh, ow))
    # output_padding may reach past the VALID output: TRANSPOSE_CONV then writes a larger
    # output whose extra rows/columns hold only the bias, as in ONNX.
    full = (n, max(valid[0], p[0] + oh), max(valid[1], p[1] + ow), m)
    xin = input_nhwc(ctx, x)
    act, out_name = take_activation(ctx, node)
    cropped = tuple(p) != (0, 0) or (oh, ow) != full[1:3]
    full_t = ctx.b.tensor(f"{node.name}_full", full) if cropped else None
    out = output_nhwc(ctx, out_name, onnx_out)
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
                             ctx.b.const("size", np.asarray([n, oh, ow, m], np.int32))], [out],
                 *options("SliceOptions"))
    bind_1d(ctx, out_name, out, onnx_out)


def _transpose_crop_begin(node, a, valid, out_hw) -> list[int]:
    """Where the ONNX output starts inside TRANSPOSE_CONV's VALID output (the pads at the start)."""
    if "output_shape" not in a:
        return list(a.get("pads", [0, 0, 0, 0])[:2])
    # With output_shape, ONNX ignores `pads` and derives them: the total padding is split
    # with the larger half at the start (auto_pad NOTSET).
    op_ = a.get("output_padding", [0, 0])
    total = [valid[i] + op_[i] - out_hw[i] for i in range(2)]
    if min(total) < 0:
        fail(node, "an output_shape larger than the transposed convolution's output is not supported")
    return [t - t // 2 for t in total]
