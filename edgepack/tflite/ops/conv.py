"""Convolutions: ONNX Conv (plain, depthwise, grouped) and ConvTranspose, in NHWC.

Weights must be constants; they are re-laid out for TFLite (OHWI, 1HWO), padding becomes
SAME/VALID or an explicit PAD, and a following Relu/Clip is fused into the op.
"""

from __future__ import annotations

import numpy as np

from ..builder import options
from ..context import NHWC, Context, attrs
from ._common import BOP, PAD, converter, explicit_pad, fail, pads_2d, static_shape, take_activation


def _weight_and_bias(ctx: Context, node, out_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D convolution's constant weight, and its bias (zeros when absent)."""
    w = ctx.require_const(node.input[1], node, "the weight").astype(np.float32)
    if w.ndim != 4:
        fail(node, f"only 2-D {node.op_type} is supported (weight rank {w.ndim})")
    if len(node.input) > 2 and node.input[2]:
        return w, ctx.require_const(node.input[2], node, "the bias").astype(np.float32)
    return w, np.zeros(w.shape[out_axis], np.float32)


@converter("Conv")
def conv(ctx: Context, node):
    a = attrs(node)
    x, w_name = node.input[0], node.input[1]
    w, bias = _weight_and_bias(ctx, node, out_axis=0)
    _, c, h, wd = ctx.shape(x)
    m, cg, kh, kw = w.shape
    group = a.get("group", 1)
    strides = a.get("strides", [1, 1])
    dil = a.get("dilations", [1, 1])
    padding, explicit = pads_2d(node, (h, wd), (kh, kw), strides, dil)
    xin = ctx.get(x, NHWC)
    if explicit:
        xin = explicit_pad(ctx, xin, explicit, node.name or w_name)
    act, out_name = take_activation(ctx, node)
    out_shape = static_shape(ctx, node.output[0], node)
    conv_opts = {"padding": padding, "strideH": strides[0], "strideW": strides[1],
                 "dilationHFactor": dil[0], "dilationWFactor": dil[1], "fusedActivationFunction": act}
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
        fail(node, "grouped ConvTranspose is not supported")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        fail(node, "dilated ConvTranspose is not supported (TFLite TRANSPOSE_CONV has no dilation)")
    auto = a.get("auto_pad", b"NOTSET")
    if (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", "VALID"):
        fail(node, "auto_pad SAME_* is not supported; export with explicit pads")
    _, m, kh, kw = w.shape
    n, _, h, wd = ctx.shape(x)
    s = a.get("strides", [1, 1])
    out_shape = static_shape(ctx, node.output[0], node)
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
                             ctx.b.const("size", np.asarray([n, oh, ow, m], np.int32))], [out],
                 *options("SliceOptions"))


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
