"""Per-operator parity of edgepack's ONNX → TFLite converter.

Each case builds a small float32 ONNX graph (opset 18, static shapes), runs it in
onnxruntime, converts it with `edgepack.tflite.convert.convert`, runs the result in LiteRT
and compares. Most cases put the op after a convolution so that it sees an NHWC-produced
value (the layout bookkeeping is what goes wrong, not the arithmetic).

Tolerance: rtol 1e-4 / atol 1e-5 everywhere, except where noted on the case.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_graphs import Graph, run_onnx, run_tflite  # noqa: E402

from edgepack.errors import UnsupportedOperatorError  # noqa: E402
from edgepack.tflite.convert import convert  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


@dataclass
class Case:
    id: str
    build: Callable[[Graph], object]  # adds nodes; returns the output name(s)
    opset: int = 18
    rtol: float = RTOL
    atol: float = ATOL


CASES: list[Case] = []


def case(id: str, build, **kw) -> None:
    CASES.append(Case(id, build, **kw))


def img(g: Graph, c: int = 4, h: int = 8, w: int = 8, n: int = 1) -> str:
    return g.input("x", [n, c, h, w])


def conv_out(g: Graph, c: int = 4, cout: int = 6, h: int = 8, w: int = 8, n: int = 1) -> str:
    """An NHWC-produced value: a 3x3 SAME convolution of the graph input."""
    return g.conv(img(g, c, h, w, n), c, cout, 3, pads=[1, 1, 1, 1])


def check(model, g: Graph, rtol: float = RTOL, atol: float = ATOL, io_layout: str = "NHWC") -> None:
    feeds = g.feeds()
    ref = run_onnx(model, feeds)
    model_bytes, io = convert(model, io_layout=io_layout)
    got = run_tflite(model_bytes, io, feeds)
    assert set(got) == set(ref)
    for name in ref:
        assert got[name].shape == ref[name].shape, name
        np.testing.assert_allclose(got[name], ref[name], rtol=rtol, atol=atol, err_msg=name)


# ---------------------------------------------------------------------------------------
# Conv

CONV = {
    "plain_same": dict(pads=[1, 1, 1, 1]),
    "no_bias": dict(pads=[1, 1, 1, 1], bias=False),
    "valid": dict(),
    "1x1": dict(k=1),
    "kernel_3x1": dict(k=(3, 1), pads=[1, 0, 1, 0]),
    "grouped": dict(cin=4, cout=6, group=2, pads=[1, 1, 1, 1]),
    "grouped_no_bias_stride2": dict(cin=4, cout=8, group=4, k=3, strides=[2, 2], bias=False, cdims=(4, 8, 8)),
    "depthwise": dict(cin=4, cout=4, group=4, pads=[1, 1, 1, 1]),
    "depthwise_no_bias_valid": dict(cin=4, cout=4, group=4, bias=False),
    "depthwise_multiplier2": dict(cin=4, cout=8, group=4, pads=[1, 1, 1, 1]),
    "depthwise_stride2": dict(cin=4, cout=4, group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
    "dilated": dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
    "dilated_valid": dict(dilations=[2, 1]),
    "depthwise_dilated": dict(cin=4, cout=4, group=4, dilations=[2, 2], pads=[2, 2, 2, 2]),
    "pads_symmetric_2": dict(pads=[2, 2, 2, 2]),
    "pads_asymmetric": dict(pads=[0, 1, 1, 2]),
    "pads_asymmetric_k2": dict(k=2, pads=[0, 0, 1, 1]),
    "auto_pad_same_upper_s1": dict(auto_pad="SAME_UPPER"),
    "auto_pad_same_upper_s2_even": dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    "auto_pad_same_upper_s2_odd": dict(auto_pad="SAME_UPPER", strides=[2, 2], cdims=(4, 7, 7)),
    "auto_pad_same_lower_s2_even": dict(auto_pad="SAME_LOWER", strides=[2, 2]),
    "auto_pad_valid": dict(auto_pad="VALID", strides=[2, 2]),
    "stride2_odd": dict(strides=[2, 2], pads=[1, 1, 1, 1], cdims=(4, 7, 7)),
    "stride2_even": dict(strides=[2, 2], pads=[1, 1, 1, 1]),
    "stride2_even_k1": dict(k=1, strides=[2, 2]),
    "stride_2x1_rect": dict(strides=[2, 1], pads=[1, 1, 1, 1], cdims=(4, 7, 9)),
    "batch2": dict(pads=[1, 1, 1, 1], n=2),
}


def _conv_case(spec: dict, act: str | None = None):
    spec = dict(spec)
    cin, h, w = spec.pop("cdims", (4, 8, 8))
    cin = spec.pop("cin", cin)
    cout = spec.pop("cout", 6)
    n = spec.pop("n", 1)
    k = spec.pop("k", 3)

    def build(g: Graph):
        y = g.conv(img(g, cin, h, w, n), cin, cout, k, **spec)
        if act == "relu":
            y = g.op("Relu", y)
        elif act == "relu6":
            y = g.op("Clip", y, g.const(np.float32(0)), g.const(np.float32(6)))
        elif act == "clip_general":
            y = g.op("Clip", y, g.const(np.float32(-0.5)), g.const(np.float32(0.7)))
        return y

    return build


for _id, _spec in CONV.items():
    case(f"conv_{_id}", _conv_case(_spec))
for _id in ("plain_same", "no_bias", "grouped", "depthwise", "depthwise_multiplier2", "stride2_even",
            "pads_asymmetric"):
    case(f"conv_{_id}+relu", _conv_case(CONV[_id], "relu"))
    case(f"conv_{_id}+relu6", _conv_case(CONV[_id], "relu6"))
case("conv_plain_same+clip(-0.5,0.7)", _conv_case(CONV["plain_same"], "clip_general"))


def _conv_relu_two_consumers(g: Graph):
    """A conv whose output is read by the Relu and by something else: no fusion."""
    y = conv_out(g)
    return g.op("Relu", y), g.op("Sigmoid", y)


case("conv_output_used_twice_with_relu", _conv_relu_two_consumers)
case("clip_variable_bound_input", lambda g: g.op("Clip", img(g), g.input("lo", [])))
case("conv_chain", lambda g: g.conv(g.op("Relu", conv_out(g)), 6, 5, 3, strides=[2, 2], pads=[1, 1, 1, 1]))

# ---------------------------------------------------------------------------------------
# ConvTranspose


def _convt(k=3, cin=4, cout=5, h=5, w=5, act=False, bias=True, **attributes):
    def build(g: Graph):
        ins = [img(g, cin, h, w), g.random((cin, cout, k, k), 0.3)] + ([g.random((cout,), 0.1)] if bias else [])
        y = g.op("ConvTranspose", *ins, kernel_shape=[k, k], **attributes)
        return g.op("Relu", y) if act else y

    return build


case("convtranspose_s2_k2", _convt(k=2, strides=[2, 2]))
case("convtranspose_s2_k3_no_bias", _convt(strides=[2, 2], bias=False))
case("convtranspose_s2_k3_pads", _convt(strides=[2, 2], pads=[1, 1, 1, 1]))
case("convtranspose_s2_k3_pads_output_padding", _convt(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]))
case("convtranspose_s2_k4_pads_asymmetric", _convt(k=4, strides=[2, 2], pads=[1, 2, 2, 1]))
case("convtranspose_s1_k3+relu", _convt(act=True))
case("convtranspose_s2_pads+relu", _convt(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1], act=True))
case("convtranspose_s2_output_padding_no_pads", _convt(strides=[2, 2], output_padding=[1, 1]))
case("convtranspose_output_shape_odd_total", _convt(strides=[2, 2], output_shape=[10, 10]))
case("convtranspose_output_shape_even_total", _convt(k=4, strides=[2, 2], output_shape=[10, 10]))
case("convtranspose_rect", _convt(strides=[2, 1], h=4, w=6, pads=[1, 0, 1, 0]))

# ---------------------------------------------------------------------------------------
# Gemm / MatMul


def _gemm(trans_b=0, alpha=1.0, beta=1.0, c_shape=(7,), after_conv=False):
    def build(g: Graph):
        if after_conv:
            x = g.op("Flatten", g.op("GlobalAveragePool", conv_out(g)))
            k = 6
        else:
            x, k = g.input("x", [3, 5]), 5
        b = g.random((7, k) if trans_b else (k, 7))
        ins = [x, b] + ([g.random(c_shape, 0.5)] if c_shape is not None else [])
        return g.op("Gemm", *ins, transB=trans_b, alpha=alpha, beta=beta)

    return build


case("gemm_transB0", _gemm())
case("gemm_transB1", _gemm(trans_b=1))
case("gemm_alpha_beta", _gemm(trans_b=1, alpha=0.5, beta=2.0))
case("gemm_no_C", _gemm(c_shape=None, alpha=1.5))
case("gemm_C_1xN", _gemm(c_shape=(1, 7), beta=0.3))
case("gemm_C_scalar", _gemm(c_shape=(), trans_b=1))
case("gemm_after_conv_gap_flatten", _gemm(trans_b=1, after_conv=True))
case("gemm+relu", lambda g: g.op("Relu", _gemm(trans_b=1)(g)))
case("matmul_2d_const", lambda g: g.op("MatMul", g.input("x", [3, 5]), g.random((5, 7))))
case("matmul_3d_const", lambda g: g.op("MatMul", g.input("x", [2, 3, 5]), g.random((5, 7))))
case("matmul_4d_const_after_conv", lambda g: g.op("MatMul", conv_out(g), g.random((8, 3))))
case("matmul_1d_const", lambda g: g.op("MatMul", g.input("x", [5]), g.random((5, 7))))
case("matmul_const_A", lambda g: g.op("MatMul", g.random((3, 5)), g.input("x", [2, 5, 4])))
case("matmul_two_variables_2d", lambda g: g.op("MatMul", g.input("a", [3, 5]), g.input("b", [5, 4])))
case("matmul_two_variables_3d", lambda g: g.op("MatMul", g.input("a", [2, 3, 5]), g.input("b", [2, 5, 4])))
case("matmul_variables_broadcast", lambda g: g.op("MatMul", g.input("a", [2, 3, 5]), g.input("b", [5, 4])))
case("matmul_3d_const_B", lambda g: g.op("MatMul", g.input("a", [2, 3, 5]), g.random((2, 5, 4))))

# ---------------------------------------------------------------------------------------
# element-wise binary with broadcasting

BROADCAST = {
    "conv_vs_C11": lambda g: (conv_out(g), g.random((6, 1, 1))),
    "C11_vs_conv": lambda g: (g.random((6, 1, 1)), conv_out(g)),
    "conv_vs_scalar": lambda g: (conv_out(g), g.const(np.float32(1.7))),
    "scalar_vs_conv": lambda g: (g.const(np.float32(1.7)), conv_out(g)),
    "conv_vs_conv": lambda g: (lambda x: (g.conv(x, 4, 6, 3, pads=[1, 1, 1, 1]), g.conv(x, 4, 6, 1)))(img(g)),
    "conv_vs_2d_const": lambda g: (conv_out(g), g.random((8, 8))),
    "conv_vs_2d_variable": lambda g: (conv_out(g), g.input("y", [1, 8])),
    "2d_variable_vs_conv": lambda g: (g.input("y", [8, 8]), conv_out(g)),
    "conv_vs_1chw_const": lambda g: (conv_out(g), g.random((1, 6, 8, 8))),
    "input_vs_input_4d": lambda g: (g.input("a", [1, 3, 4, 5]), g.input("b", [1, 3, 1, 5])),
    "conv_vs_reshaped": lambda g: (conv_out(g, cout=2), g.op("Reshape", g.input("y", [2, 64]), g.ints([1, 2, 8, 8]))),
    "2d_vs_1d_variable": lambda g: (g.input("a", [3, 5]), g.input("b", [5])),
    "1d_variable_vs_3d_const": lambda g: (g.input("a", [5]), g.random((2, 3, 5))),
    "conv_vs_C11_variable": lambda g: (conv_out(g), g.input("y", [6, 1, 1])),
    "conv_vs_itself": lambda g: (lambda y: (y, y))(conv_out(g)),
}

for _op in ("Add", "Sub", "Mul", "Div"):
    for _id, _make in BROADCAST.items():
        def _build(g, op=_op, make=_make):
            a, b = make(g)
            if op == "Div":  # keep the divisor away from zero
                b = g.op("Add", g.op("Abs", b), g.const(np.float32(0.5)))
            return g.op(op, a, b)

        case(f"{_op.lower()}_{_id}", _build)

case("add+relu_fused", lambda g: g.op("Relu", g.op("Add", conv_out(g), g.random((6, 1, 1)))))
case("sub+relu6_fused", lambda g: g.op("Clip", g.op("Sub", conv_out(g), g.random((6, 1, 1))), g.const(np.float32(0)),
                                        g.const(np.float32(6))))
case("mul+relu_fused_broadcast_2d", lambda g: g.op("Relu", g.op("Mul", conv_out(g), g.input("y", [1, 8]))))
case("div+relu_fused", lambda g: g.op("Relu", g.op("Div", conv_out(g), g.const(np.float32(0.7)))))
case("max_conv_vs_C11", lambda g: g.op("Max", conv_out(g), g.random((6, 1, 1))))
case("min_conv_vs_scalar", lambda g: g.op("Min", conv_out(g), g.const(np.float32(0.2))))
case("pow_square", lambda g: g.op("Pow", conv_out(g), g.const(np.float32(2.0))))
case("pow_cube", lambda g: g.op("Pow", g.op("Abs", conv_out(g)), g.const(np.float32(1.5))))

# ---------------------------------------------------------------------------------------
# activations and other unary ops (after a conv, so in NHWC)


def _after_conv(op: str, *const_inputs, **attributes):
    def build(g: Graph):
        return g.op(op, conv_out(g), *[g.const(np.asarray(c, np.float32)) for c in const_inputs], **attributes)

    return build


case("relu", _after_conv("Relu"))
case("relu_on_input", lambda g: g.op("Relu", img(g)))
case("clip_0_6_on_input", lambda g: g.op("Clip", img(g), g.const(np.float32(0)), g.const(np.float32(6))))
case("clip_0_6_standalone", lambda g: g.op("Clip", g.op("Sigmoid", conv_out(g)), g.const(np.float32(0)),
                                               g.const(np.float32(6))))
case("clip_-0.5_2", _after_conv("Clip", -0.5, 2.0))
case("clip_min_only", lambda g: g.op("Clip", conv_out(g), g.const(np.float32(-0.3))))
case("clip_max_only", lambda g: g.op("Clip", conv_out(g), "", g.const(np.float32(0.4))))
case("clip_-1_1", _after_conv("Clip", -1.0, 1.0))
case("leaky_relu", _after_conv("LeakyRelu", alpha=0.1))
case("leaky_relu_default", _after_conv("LeakyRelu"))
case("prelu_per_channel", lambda g: g.op("PRelu", conv_out(g), g.random((6, 1, 1), 0.3)))
case("prelu_scalar", lambda g: g.op("PRelu", conv_out(g), g.const(np.asarray([0.25], np.float32))))
case("sigmoid", _after_conv("Sigmoid"))
case("tanh", _after_conv("Tanh"))
case("hard_sigmoid", _after_conv("HardSigmoid"))
case("hard_sigmoid_alpha_beta", _after_conv("HardSigmoid", alpha=1 / 6, beta=0.5))
case("hard_swish", _after_conv("HardSwish"))
case("exp", _after_conv("Exp"))
case("log", lambda g: g.op("Log", g.op("Add", g.op("Abs", conv_out(g)), g.const(np.float32(0.1)))))
case("sqrt", lambda g: g.op("Sqrt", g.op("Abs", conv_out(g))))
case("abs", _after_conv("Abs"))
case("neg", _after_conv("Neg"))
case("floor", _after_conv("Floor"))
case("ceil", _after_conv("Ceil"))
case("elu", _after_conv("Elu"))
case("clip_min_above_max", _after_conv("Clip", 1.0, -1.0))  # ONNX: every value becomes max
case("clip_no_bounds", lambda g: g.op("Clip", conv_out(g)))
# Gelu (an opset-20 op): TFLite's GELU evaluates the same formulas as ONNX for both forms;
# the tanh approximation needs no looser tolerance (max error ~1e-6 in practice).
case("gelu_exact", _after_conv("Gelu", approximate="none"), opset=20)
case("gelu_tanh", _after_conv("Gelu", approximate="tanh"), opset=20)
case("gelu_tanh_2d", lambda g: g.op("Gelu", g.input("x", [3, 7]), approximate="tanh"), opset=20)


def _gelu_erf(order: str):
    def build(g: Graph):
        x = conv_out(g)
        e = g.op("Erf", g.op("Div", x, g.const(np.float32(math.sqrt(2)))))
        one_plus = g.op("Add", e, g.const(np.float32(1.0)))
        half = g.const(np.float32(0.5))
        if order == "x_half_first":  # (x * 0.5) * (1 + erf(x / sqrt 2)), as in BERT
            return g.op("Mul", g.op("Mul", x, half), one_plus)
        if order == "half_x_first":  # (0.5 * x) * (1 + erf)
            return g.op("Mul", g.op("Mul", half, x), one_plus)
        if order == "half_last":  # (x * (1 + erf)) * 0.5, as torch.onnx exports nn.GELU
            return g.op("Mul", g.op("Mul", x, one_plus), half)
        raise ValueError(order)

    return build


for _order in ("x_half_first", "half_x_first", "half_last"):
    case(f"gelu_erf_form_{_order}", _gelu_erf(_order))


def _gelu_erf_mul_form(g: Graph):
    """x / sqrt 2 written as x * (1 / sqrt 2)."""
    x = img(g)
    e = g.op("Erf", g.op("Mul", x, g.const(np.float32(1 / math.sqrt(2)))))
    return g.op("Mul", g.op("Mul", x, g.op("Add", g.const(np.float32(1.0)), e)), g.const(np.float32(0.5)))


case("gelu_erf_form_mul_on_input", _gelu_erf_mul_form)


def _gelu_erf_constant_nodes(g: Graph):
    """The torch.onnx export of nn.GELU: constants as Constant nodes, not initializers."""
    def k(v):
        return g.op("Constant", value=numpy_helper.from_array(np.asarray(v, np.float32)))

    x = conv_out(g)
    e = g.op("Erf", g.op("Div", x, k(math.sqrt(2))))
    return g.op("Mul", g.op("Mul", x, g.op("Add", e, k(1.0))), k(0.5))


case("gelu_erf_form_constant_nodes", _gelu_erf_constant_nodes)

# ---------------------------------------------------------------------------------------
# softmax, batch norm

case("softmax_last_axis_2d", lambda g: g.op("Softmax", g.input("x", [3, 10])))
case("softmax_axis1_after_conv", _after_conv("Softmax", axis=1))
case("softmax_last_axis_after_conv", _after_conv("Softmax", axis=-1))
case("softmax_axis2_after_conv", _after_conv("Softmax", axis=2))
case("softmax_axis0_2d", lambda g: g.op("Softmax", g.input("x", [3, 5]), axis=0))
case("softmax_axis1_3d", lambda g: g.op("Softmax", g.input("x", [2, 5, 3]), axis=1))
case("log_softmax_axis1_after_conv", _after_conv("LogSoftmax", axis=1))


def _bn(g: Graph, x: str, c: int):
    stats = [g.const(np.random.default_rng(3).uniform(lo, hi, c).astype(np.float32))
             for lo, hi in ((0.5, 1.5), (-0.5, 0.5), (-0.5, 0.5), (0.5, 2.0))]
    return g.op("BatchNormalization", x, *stats, epsilon=1e-3)


case("batchnorm_on_input", lambda g: _bn(g, img(g), 4))
case("batchnorm_after_conv", lambda g: _bn(g, conv_out(g), 6))
case("batchnorm_2d", lambda g: _bn(g, g.input("x", [3, 5]), 5))
case("batchnorm+relu", lambda g: g.op("Relu", _bn(g, img(g), 4)))

# ---------------------------------------------------------------------------------------
# pooling and reductions

case("maxpool_k2s2", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[2, 2], strides=[2, 2]))
case("maxpool_k3s2_pads1_even_resnet", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[3, 3], strides=[2, 2],
                                                       pads=[1, 1, 1, 1]))
case("maxpool_k3s2_pads1_odd", lambda g: g.op("MaxPool", conv_out(g, h=7, w=7), kernel_shape=[3, 3], strides=[2, 2],
                                              pads=[1, 1, 1, 1]))
case("maxpool_k3s1_same", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
case("maxpool_k2s1_pads_asym", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[2, 2], pads=[0, 0, 1, 1]))
case("maxpool_k5s1_pads2", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[5, 5], pads=[2, 2, 2, 2]))
case("maxpool_k3s2_ceil_even", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[3, 3], strides=[2, 2],
                                              ceil_mode=1))
case("maxpool_k2s2_ceil_odd", lambda g: g.op("MaxPool", conv_out(g, h=7, w=7), kernel_shape=[2, 2], strides=[2, 2],
                                             ceil_mode=1))
case("maxpool_k3s2_pads1_ceil_odd", lambda g: g.op("MaxPool", conv_out(g, h=8, w=9), kernel_shape=[3, 3],
                                                   strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1))
case("maxpool_same_upper", lambda g: g.op("MaxPool", conv_out(g, h=7, w=7), kernel_shape=[3, 3], strides=[2, 2],
                                          auto_pad="SAME_UPPER"))
case("maxpool_k2s1_pads1", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[2, 2], pads=[1, 1, 1, 1]))
case("maxpool_k3s1_pads2", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[3, 3], pads=[2, 2, 2, 2]))
case("maxpool_k4s1_pads3_1", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[4, 4], pads=[3, 1, 1, 3]))
case("maxpool_k3s2_pads1_ceil_even", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[3, 3], strides=[2, 2],
                                                    pads=[1, 1, 1, 1], ceil_mode=1))
case("maxpool_k3s3_ceil", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[3, 3], strides=[3, 3], ceil_mode=1))
case("maxpool_same_lower_k2", lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[2, 2], auto_pad="SAME_LOWER"))
case("maxpool+relu", lambda g: g.op("Relu", g.op("MaxPool", conv_out(g), kernel_shape=[2, 2], strides=[2, 2])))
case("avgpool_k2s2", lambda g: g.op("AveragePool", conv_out(g), kernel_shape=[2, 2], strides=[2, 2]))
case("avgpool_k3s1_same_pads_exclude_pad", lambda g: g.op("AveragePool", conv_out(g), kernel_shape=[3, 3],
                                                          pads=[1, 1, 1, 1], count_include_pad=0))
case("avgpool_k3s2_same_upper_exclude_pad", lambda g: g.op("AveragePool", conv_out(g, h=7, w=7), kernel_shape=[3, 3],
                                                           strides=[2, 2], auto_pad="SAME_UPPER"))
case("avgpool_k3s2_same_upper_include_pad", lambda g: g.op("AveragePool", conv_out(g, h=7, w=7), kernel_shape=[3, 3],
                                                           strides=[2, 2], auto_pad="SAME_UPPER", count_include_pad=1))
case("avgpool_k3s2_ceil_odd", lambda g: g.op("AveragePool", conv_out(g, h=7, w=7), kernel_shape=[3, 3], strides=[2, 2],
                                             ceil_mode=1))
case("avgpool+relu", lambda g: g.op("Relu", g.op("AveragePool", conv_out(g), kernel_shape=[2, 2], strides=[2, 2])))
case("avgpool_k3s1_pads1_include_pad", lambda g: g.op("AveragePool", conv_out(g), kernel_shape=[3, 3],
                                                      pads=[1, 1, 1, 1], count_include_pad=1))
case("avgpool_k3s2_pads1_include_pad", lambda g: g.op("AveragePool", conv_out(g), kernel_shape=[3, 3], strides=[2, 2],
                                                      pads=[1, 1, 1, 1], count_include_pad=1))
case("avgpool_k2s1_pads_asym_include_pad", lambda g: g.op("AveragePool", conv_out(g), kernel_shape=[2, 2],
                                                          pads=[1, 0, 0, 1], count_include_pad=1))
case("avgpool_k2s2_ceil_exact", lambda g: g.op("AveragePool", conv_out(g), kernel_shape=[2, 2], strides=[2, 2],
                                               ceil_mode=1))
case("global_average_pool", lambda g: g.op("GlobalAveragePool", conv_out(g)))
case("global_average_pool_on_input", lambda g: g.op("GlobalAveragePool", img(g)))
case("global_max_pool", lambda g: g.op("GlobalMaxPool", conv_out(g)))
case("reduce_mean_hw_keepdims1", lambda g: g.op("ReduceMean", conv_out(g), g.ints([2, 3]), keepdims=1))
case("reduce_mean_hw_keepdims0", lambda g: g.op("ReduceMean", conv_out(g), g.ints([2, 3]), keepdims=0))
case("reduce_mean_c_keepdims0", lambda g: g.op("ReduceMean", conv_out(g), g.ints([1]), keepdims=0))
case("reduce_mean_c_keepdims1", lambda g: g.op("ReduceMean", conv_out(g), g.ints([1]), keepdims=1))
case("reduce_mean_negative_axis_keepdims0", lambda g: g.op("ReduceMean", conv_out(g), g.ints([-1]), keepdims=0))
case("reduce_mean_all_axes", lambda g: g.op("ReduceMean", conv_out(g), keepdims=0))
case("reduce_mean_noop_empty_axes", lambda g: g.op("Relu", g.op("ReduceMean", conv_out(g), noop_with_empty_axes=1)))
case("reduce_mean_2d", lambda g: g.op("ReduceMean", g.input("x", [3, 5]), g.ints([1]), keepdims=0))
case("reduce_sum_c_and_w_keepdims0", lambda g: g.op("ReduceSum", conv_out(g), g.ints([1, 3]), keepdims=0))
case("reduce_max_c", lambda g: g.op("ReduceMax", conv_out(g), g.ints([1]), keepdims=1))
case("reduce_min_w", lambda g: g.op("ReduceMin", conv_out(g), g.ints([3]), keepdims=0))
case("reduce_sum_hw", lambda g: g.op("ReduceSum", conv_out(g), g.ints([2, 3]), keepdims=1))
case("reduce_mean_keepdims0_then_gemm", lambda g: g.op("Gemm", g.op("ReduceMean", conv_out(g), g.ints([2, 3]),
                                                                    keepdims=0), g.random((6, 3))))

# ---------------------------------------------------------------------------------------
# concat, reshape and friends


def _two_convs(g: Graph, c1: int = 3, c2: int = 5):
    x = img(g)
    return g.conv(x, 4, c1, 3, pads=[1, 1, 1, 1]), g.conv(x, 4, c2, 1)


case("concat_channel_after_convs", lambda g: g.op("Concat", *_two_convs(g), axis=1))
case("concat_channel_negative_axis", lambda g: g.op("Concat", *_two_convs(g), axis=-3))
case("concat_width_after_convs", lambda g: g.op("Concat", *_two_convs(g, 3, 3), axis=3))
case("concat_2d_axis1", lambda g: g.op("Concat", g.input("a", [2, 3]), g.input("b", [2, 4]), axis=1))
case("concat_2d_axis0", lambda g: g.op("Concat", g.input("a", [2, 3]), g.input("b", [1, 3]), axis=0))
case("concat_with_constant", lambda g: g.op("Concat", conv_out(g), g.random((1, 2, 8, 8)), axis=1))
case("concat_conv_and_reshaped", lambda g: g.op("Concat", conv_out(g), g.op("Reshape", g.input("y", [2, 64]),
                                                                             g.ints([1, 2, 8, 8])), axis=1))
case("concat_three_mixed_layouts", lambda g: g.op("Concat", conv_out(g), g.op("Transpose", g.input("y", [1, 8, 8, 2]),
                                                                                 perm=[0, 3, 1, 2]),
                                                   g.random((1, 1, 8, 8)), axis=1))
case("concat+relu", lambda g: g.op("Relu", g.op("Concat", *_two_convs(g), axis=1)))
case("flatten_after_conv", lambda g: g.op("Flatten", conv_out(g)))
case("flatten_after_conv_batch2", lambda g: g.op("Flatten", conv_out(g, n=2)))
case("flatten_axis2_after_conv", lambda g: g.op("Flatten", conv_out(g), axis=2))
case("flatten_after_conv_then_gemm", lambda g: g.op("Gemm", g.op("Flatten", conv_out(g, h=4, w=4)),
                                                     g.random((96, 5)), g.random((5,))))
case("reshape_after_conv_to_2d", lambda g: g.op("Reshape", conv_out(g), g.ints([1, -1])))
case("reshape_after_conv_to_3d", lambda g: g.op("Reshape", conv_out(g), g.ints([1, 6, 64])))
case("reshape_after_conv_split_channels", lambda g: g.op("Reshape", conv_out(g), g.ints([1, 2, 3, 8, 8])))
case("reshape_on_nhwc_input", lambda g: g.op("Reshape", img(g), g.ints([1, -1])))
case("flatten_after_transpose_to_nhwc", lambda g: g.op("Flatten", g.op("Transpose", conv_out(g), perm=[0, 2, 3, 1])))
case("reshape_2d_to_4d_then_conv", lambda g: g.conv(g.op("Reshape", g.input("y", [1, 256]), g.ints([1, 4, 8, 8])),
                                                    4, 3, 3))
case("squeeze_after_gap", lambda g: g.op("Squeeze", g.op("GlobalAveragePool", conv_out(g)), g.ints([2, 3])))
case("squeeze_all", lambda g: g.op("Squeeze", g.op("GlobalAveragePool", conv_out(g))))
case("squeeze_batch_after_conv", lambda g: g.op("Squeeze", conv_out(g), g.ints([0])))
case("unsqueeze_2d", lambda g: g.op("Unsqueeze", g.input("x", [3, 5]), g.ints([1, -1])))
case("unsqueeze_after_conv", lambda g: g.op("Unsqueeze", conv_out(g), g.ints([2])))
case("transpose_2d", lambda g: g.op("Transpose", g.input("x", [3, 5]), perm=[1, 0]))
case("transpose_3d_default", lambda g: g.op("Transpose", g.input("x", [2, 3, 5])))
case("transpose_after_conv_to_nhwc", lambda g: g.op("Transpose", conv_out(g), perm=[0, 2, 3, 1]))
case("transpose_after_conv_hw", lambda g: g.op("Transpose", conv_out(g), perm=[0, 1, 3, 2]))
case("transpose_then_conv", lambda g: g.conv(g.op("Transpose", g.input("y", [1, 8, 8, 4]), perm=[0, 3, 1, 2]),
                                             4, 3, 3))


def _channel_shuffle(g: Graph):
    x = conv_out(g, cout=6)
    y = g.op("Reshape", x, g.ints([1, 2, 3, 8, 8]))
    y = g.op("Transpose", y, perm=[0, 2, 1, 3, 4])
    y = g.op("Reshape", y, g.ints([1, 6, 8, 8]))
    return g.conv(y, 6, 4, 1)


case("channel_shuffle_between_convs", _channel_shuffle)

case("pad_constant_zero_after_conv", lambda g: g.op("Pad", conv_out(g), g.ints([0, 0, 1, 2, 0, 0, 2, 1])))
case("pad_constant_value_after_conv", lambda g: g.op("Pad", conv_out(g), g.ints([0, 0, 1, 1, 0, 0, 1, 1]),
                                                     g.const(np.float32(1.5))))
case("pad_constant_channels", lambda g: g.op("Pad", conv_out(g), g.ints([0, 1, 0, 0, 0, 2, 0, 0])))
case("pad_reflect_after_conv", lambda g: g.op("Pad", conv_out(g), g.ints([0, 0, 2, 1, 0, 0, 1, 2]), mode="reflect"))
case("pad_axes_input", lambda g: g.op("Pad", conv_out(g), g.ints([1, 2, 3, 0]), g.const(np.float32(-1.0)),
                                      g.ints([2, 3])))
case("pad_reflect_channels", lambda g: g.op("Pad", conv_out(g), g.ints([0, 2, 0, 0, 0, 1, 0, 0]), mode="reflect"))
case("pad_2d", lambda g: g.op("Pad", g.input("x", [3, 5]), g.ints([1, 0, 0, 2])))
case("pad_then_conv", lambda g: g.conv(g.op("Pad", img(g), g.ints([0, 0, 1, 1, 0, 0, 1, 1]), mode="reflect"),
                                       4, 3, 3))


def _resize(mode, ctm, scales=None, sizes=None, nearest_mode=None, h=6, w=6):
    def build(g: Graph):
        x = conv_out(g, h=h, w=w)
        extra = {"nearest_mode": nearest_mode} if nearest_mode else {}
        if sizes is not None:
            ins = [x, "", "", g.ints(sizes)]
        else:
            ins = [x, "", g.const(np.asarray(scales, np.float32))]
        return g.op("Resize", *ins, mode=mode, coordinate_transformation_mode=ctm, **extra)

    return build


case("resize_nearest_asymmetric_floor_x2", _resize("nearest", "asymmetric", scales=[1, 1, 2, 2], nearest_mode="floor"))
case("resize_nearest_default_x2", _resize("nearest", "half_pixel", scales=[1, 1, 2, 2]))
case("resize_nearest_asymmetric_floor_sizes", _resize("nearest", "asymmetric", sizes=[1, 6, 9, 15],
                                                      nearest_mode="floor"))
case("resize_nearest_half_pixel_ceil_sizes", _resize("nearest", "half_pixel", sizes=[1, 6, 9, 15],
                                                     nearest_mode="round_prefer_ceil"))
case("resize_nearest_align_corners_sizes", _resize("nearest", "align_corners", sizes=[1, 6, 9, 11],
                                                   nearest_mode="round_prefer_ceil"))
case("resize_nearest_asymmetric_round_prefer_floor_x2", _resize("nearest", "asymmetric", scales=[1, 1, 2, 2],
                                                                nearest_mode="round_prefer_floor"))
case("resize_nearest_half_pixel_round_prefer_floor_x3", _resize("nearest", "half_pixel", scales=[1, 1, 3, 3]))
case("resize_nearest_asymmetric_floor_x3", _resize("nearest", "asymmetric", scales=[1, 1, 3, 3], nearest_mode="floor"))
case("resize_nearest_tf_half_pixel_floor_sizes", _resize("nearest", "tf_half_pixel_for_nn", sizes=[1, 6, 9, 15],
                                                         nearest_mode="floor"))
case("resize_nearest_scales_1.5_exact", _resize("nearest", "asymmetric", scales=[1, 1, 1.5, 1.5], nearest_mode="floor"))
case("resize_nearest_downsample_sizes", _resize("nearest", "asymmetric", sizes=[1, 6, 4, 3], nearest_mode="floor"))
case("resize_bilinear_axes_attribute", lambda g: g.op("Resize", conv_out(g), "",
                                                      g.const(np.asarray([2, 2], np.float32)),
                                                      axes=[2, 3], mode="linear"))
case("resize_nearest_on_input", lambda g: g.op("Resize", img(g), "", g.const(np.asarray([1, 1, 2, 2], np.float32))))
case("resize10_nearest_x1.5", lambda g: g.op("Resize", img(g, 4, 6, 6), g.const(np.asarray([1, 1, 1.5, 1.5],
                                                                                            np.float32))), opset=10)
case("upsample9_nearest_x3", lambda g: g.op("Upsample", img(g, 4, 5, 5), g.const(np.asarray([1, 1, 3, 3], np.float32))),
     opset=9)
case("upsample9_linear_x2", lambda g: g.op("Upsample", img(g, 4, 5, 5), g.const(np.asarray([1, 1, 2, 2], np.float32)),
                                           mode="linear"), opset=9)
case("upsample7_nearest_attr_x2", lambda g: g.op("Upsample", img(g, 4, 5, 5), scales=[1.0, 1.0, 2.0, 2.0]), opset=8)
case("resize_bilinear_half_pixel_x2", _resize("linear", "half_pixel", scales=[1, 1, 2, 2]))
case("resize_bilinear_pytorch_half_pixel_x2", _resize("linear", "pytorch_half_pixel", scales=[1, 1, 2, 2]))
case("resize_bilinear_align_corners_x2", _resize("linear", "align_corners", scales=[1, 1, 2, 2]))
case("resize_bilinear_asymmetric_x2", _resize("linear", "asymmetric", scales=[1, 1, 2, 2]))
case("resize_bilinear_half_pixel_sizes", _resize("linear", "half_pixel", sizes=[1, 6, 9, 13]))
case("resize_bilinear_align_corners_sizes_down", _resize("linear", "align_corners", sizes=[1, 6, 4, 5]))


def _slice(starts, ends, axes=None, steps=None):
    def build(g: Graph):
        ins = [conv_out(g, cout=8), g.ints(starts), g.ints(ends)]
        if axes is not None:
            ins.append(g.ints(axes))
        if steps is not None:
            ins.append(g.ints(steps))
        return g.op("Slice", *ins)

    return build


case("slice_channels", _slice([1], [5], [1]))
case("slice_channels_step2", _slice([0], [8], [1], [2]))
case("slice_channels_negative", _slice([-5], [-1], [-3]))
case("slice_channels_reverse", _slice([-1], [-(2**62)], [1], [-1]))
case("slice_channels_reverse_step2", _slice([6], [0], [1], [-2]))
case("slice_hw_steps", _slice([1, 0], [8, 2**62], [2, 3], [2, 3]))
case("slice_all_axes_default", _slice([0, 2, 1, 1], [1, 7, 7, 8]))
case("slice_int64_extremes_reverse", _slice([2**63 - 1], [-(2**63)], [1], [-1]))
case("slice_int64_max_end", _slice([2], [2**63 - 1], [1]))
case("slice_2d", lambda g: g.op("Slice", g.input("x", [4, 6]), g.ints([1, -4]), g.ints([3, 100]), g.ints([0, 1])))


def _split(sizes=None, outputs=2, axis=1, cout=6):
    def build(g: Graph):
        x = conv_out(g, cout=cout)
        if sizes is not None:
            return g.op("Split", x, g.ints(sizes), outputs=len(sizes), axis=axis)
        return g.op("Split", x, outputs=outputs, axis=axis, num_outputs=outputs)

    return build


case("split_channels_equal", _split())
case("split_channels_unequal", _split(sizes=[2, 4]))
case("split_channels_three_uneven_num_outputs", _split(outputs=3, cout=7))
case("split_height", _split(sizes=[3, 5], axis=2))
case("split_2d", lambda g: g.op("Split", g.input("x", [4, 6]), g.ints([1, 5]), outputs=2, axis=-1))
case("split_then_concat_swapped", lambda g: g.op("Concat", *reversed(_split()(g)), axis=1))

case("identity_between_convs", lambda g: g.conv(g.op("Identity", conv_out(g)), 6, 3, 1))
case("identity_of_input", lambda g: g.op("Identity", img(g)))
case("dropout_after_conv", _after_conv("Dropout"))
case("dropout_2d", lambda g: g.op("Dropout", g.input("x", [3, 5])))
case("dropout_training_mode_false", lambda g: g.op("Dropout", conv_out(g), g.const(np.float32(0.5)),
                                                   g.const(np.bool_(False))))
case("cast_float_to_float", _after_conv("Cast", to=1))
case("constant_node_operand", lambda g: g.op("Add", conv_out(g), g.op(
    "Constant", value=numpy_helper.from_array(np.full((6, 1, 1), 0.3, np.float32)))))
case("constant_node_value_float", lambda g: g.op("Mul", conv_out(g), g.op("Constant", value_float=0.3)))
case("conv_output_and_its_relu_both_outputs", lambda g: (lambda y: (y, g.op("Relu", y)))(conv_out(g)))
case("same_value_output_twice", lambda g: (lambda y: (y, g.op("Identity", y)))(conv_out(g)))
case("two_outputs_one_nhwc_one_2d", lambda g: (lambda y: (y, g.op("Flatten", g.op("GlobalAveragePool", y))))(
    conv_out(g)))


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_parity(c: Case):
    g = Graph()
    outs = c.build(g)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    check(g.model(*outs, opset=c.opset), g, c.rtol, c.atol)


NCHW_IO = ["conv_plain_same+relu", "flatten_after_conv", "concat_channel_after_convs", "softmax_axis1_after_conv",
           "resize_bilinear_half_pixel_x2", "channel_shuffle_between_convs", "relu_on_input", "add_input_vs_input_4d"]


@pytest.mark.parametrize("case_id", NCHW_IO)
def test_parity_nchw_io(case_id):
    """The same graphs with the TFLite model's I/O kept in ONNX's NCHW layout."""
    (c,) = [c for c in CASES if c.id == case_id]
    g = Graph()
    outs = c.build(g)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    check(g.model(*outs, opset=c.opset), g, c.rtol, c.atol, io_layout="NCHW")


def test_case_ids_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------------------------
# what must not convert


def _unsupported(op):
    def build(g: Graph):
        x = conv_out(g)
        if op == "TopK":
            return g.op("TopK", x, g.ints([2]), outputs=2, name="the_topk", axis=1)[0]
        if op == "Einsum":
            return g.op("Einsum", x, x, equation="nchw,nchw->nc", name="the_einsum")
        raise ValueError(op)

    return build


@pytest.mark.parametrize("op", ["TopK", "Einsum"])
def test_unsupported_operator_raises(op):
    g = Graph()
    model = g.model(_unsupported(op)(g))
    with pytest.raises(UnsupportedOperatorError) as e:
        convert(model)
    msg = str(e.value)
    assert op in msg and f"the_{op.lower()}" in msg and "supported" in msg


REJECTED = {
    "pad_edge": lambda g: g.op("Pad", conv_out(g), g.ints([0, 0, 1, 1, 0, 0, 1, 1]), mode="edge", name="the_pad"),
    "pad_wrap": lambda g: g.op("Pad", conv_out(g), g.ints([0, 0, 1, 1, 0, 0, 1, 1]), mode="wrap", name="the_pad"),
    "pad_negative": lambda g: g.op("Pad", conv_out(g), g.ints([0, 0, -1, 0, 0, 0, 0, 0]), name="the_pad"),
    "resize_cubic": lambda g: g.op("Resize", conv_out(g), "", g.const(np.asarray([1, 1, 2, 2], np.float32)),
                                   mode="cubic", name="the_resize"),
    "resize_channels": lambda g: g.op("Resize", conv_out(g), "", g.const(np.asarray([1, 2, 1, 1], np.float32)),
                                      mode="nearest", name="the_resize"),
    "avgpool_exclude_pad_not_same": lambda g: g.op("AveragePool", conv_out(g), kernel_shape=[3, 3], strides=[2, 2],
                                                   pads=[1, 1, 1, 1], name="the_avgpool"),
    "conv_variable_weight": lambda g: g.op("Conv", img(g), g.input("w", [3, 4, 3, 3]), name="the_conv"),
    "convtranspose_grouped": lambda g: g.op("ConvTranspose", img(g), g.random((4, 1, 3, 3)), group=4,
                                            name="the_convtranspose"),
    "gemm_transA": lambda g: g.op("Gemm", g.input("a", [5, 3]), g.random((5, 4)), transA=1, name="the_gemm"),
    "gemm_full_C": lambda g: g.op("Gemm", g.input("a", [3, 5]), g.random((5, 4)), g.random((3, 4)), name="the_gemm"),
    "elu_alpha": lambda g: g.op("Elu", conv_out(g), alpha=0.5, name="the_elu"),
    "cast_to_float16": lambda g: g.op("Cast", conv_out(g), to=10, name="the_cast"),
    "resize_inexact_scale": lambda g: g.op("Resize", conv_out(g), "", g.const(np.asarray([1, 1, 1.7, 1.7], np.float32)),
                                           mode="linear", name="the_resize"),
    "resize_nearest_asymmetric_round_prefer_ceil": lambda g: g.op(
        "Resize", conv_out(g), "", g.const(np.asarray([1, 1, 2, 2], np.float32)), mode="nearest",
        coordinate_transformation_mode="asymmetric", nearest_mode="round_prefer_ceil", name="the_resize"),
    "resize_nearest_asymmetric_round_prefer_floor_x3": lambda g: g.op(
        "Resize", conv_out(g), "", g.const(np.asarray([1, 1, 3, 3], np.float32)), mode="nearest",
        coordinate_transformation_mode="asymmetric", nearest_mode="round_prefer_floor", name="the_resize"),
    "resize_nearest_half_pixel_floor": lambda g: g.op(
        "Resize", conv_out(g), "", g.const(np.asarray([1, 1, 2, 2], np.float32)), mode="nearest",
        coordinate_transformation_mode="half_pixel", nearest_mode="floor", name="the_resize"),
    "resize_nearest_tf_half_pixel_round_prefer_ceil": lambda g: g.op(
        "Resize", conv_out(g), "", "", g.ints([1, 6, 12, 12]), mode="nearest",
        coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="round_prefer_ceil", name="the_resize"),
    "batchnorm_training_mode": lambda g: g.op("BatchNormalization", img(g), *[g.const(np.ones(4, np.float32))] * 4,
                                              training_mode=1, outputs=3, name="the_bn")[0],
    "dropout_training_mode": lambda g: g.op("Dropout", conv_out(g), g.const(np.float32(0.5)), g.const(np.bool_(True)),
                                            name="the_dropout"),
    "dropout_mask_read": lambda g: g.op("Cast", g.op("Dropout", conv_out(g), outputs=2, name="the_dropout")[1], to=1),
    "convtranspose_dilated": lambda g: g.op("ConvTranspose", img(g), g.random((4, 2, 3, 3)), dilations=[2, 2],
                                            name="the_convtranspose"),
    "maxpool_dilated": lambda g: g.op("MaxPool", conv_out(g), kernel_shape=[2, 2], dilations=[2, 2],
                                      name="the_maxpool"),
    "avgpool_same_lower_exclude_pad": lambda g: g.op("AveragePool", conv_out(g), kernel_shape=[2, 2],
                                                     auto_pad="SAME_LOWER", name="the_avgpool"),
    "conv_3d": lambda g: g.op("Conv", g.input("x", [1, 2, 4, 4, 4]), g.random((3, 2, 2, 2, 2)), name="the_conv"),
}


@pytest.mark.parametrize("kind", list(REJECTED))
def test_unsupported_attributes_raise(kind):
    g = Graph()
    out = REJECTED[kind](g)
    model = g.model(out)
    with pytest.raises(UnsupportedOperatorError) as e:
        convert(model)
    assert "'the_" in str(e.value)


# ---------------------------------------------------------------------------------------
# full-integer int8 of representative graphs


def _conv_relu_pool_gemm(g: Graph):
    y = g.op("Relu", g.conv(img(g, 3, 16, 16), 3, 8, 3, pads=[1, 1, 1, 1]))
    y = g.op("MaxPool", y, kernel_shape=[2, 2], strides=[2, 2])
    y = g.op("Relu", g.conv(y, 8, 8, 3, pads=[1, 1, 1, 1], strides=[2, 2]))
    y = g.op("Flatten", g.op("GlobalAveragePool", y))
    return g.op("Gemm", y, g.random((10, 8)), g.random((10,)), transB=1)


def _depthwise_hardswish(g: Graph):
    y = g.op("HardSwish", g.conv(img(g, 4, 12, 12), 4, 8, 1))
    y = g.op("HardSwish", g.conv(y, 8, 8, 3, group=8, pads=[1, 1, 1, 1]))
    return g.conv(y, 8, 6, 1)


def _concat_resize(g: Graph):
    x = img(g, 4, 8, 8)
    a = g.op("Relu", g.conv(x, 4, 4, 3, pads=[1, 1, 1, 1], strides=[2, 2]))
    a = g.op("Resize", a, "", g.const(np.asarray([1, 1, 2, 2], np.float32)), mode="nearest",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    b = g.op("Relu", g.conv(x, 4, 4, 1))
    y = g.op("Concat", a, b, axis=1)
    y = g.op("Resize", y, "", g.const(np.asarray([1, 1, 2, 2], np.float32)), mode="linear",
             coordinate_transformation_mode="half_pixel")
    return g.conv(y, 8, 4, 3, pads=[1, 1, 1, 1])


def _padded_maxpool_div(g: Graph):
    """MaxPool with explicit (ceil-mode) padding and a division by a constant: both once
    produced ops LiteRT cannot run in int8 (PADV2 with a float fill, DIV)."""
    y = g.op("Relu", g.conv(img(g, 3, 8, 8), 3, 6, 3, pads=[1, 1, 1, 1]))
    y = g.op("MaxPool", y, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    y = g.op("Div", y, g.const(np.float32(3.0)))
    return g.conv(y, 6, 4, 1)


INT8 = {"conv_relu_pool_gemm": _conv_relu_pool_gemm, "depthwise_hardswish": _depthwise_hardswish,
        "concat_resize": _concat_resize, "padded_maxpool_div": _padded_maxpool_div}


def _sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = np.sum((ref - test.astype(np.float64)) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref**2) / noise))


@pytest.mark.parametrize("name", list(INT8))
def test_full_int8(name):
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from edgepack.tflite.quantize import to_full_int8

    g = Graph()
    model = g.model(INT8[name](g))
    model_bytes, io = convert(model)
    (spec,) = io["inputs"]
    calib = [g.feeds(seed=100 + i) for i in range(32)]
    q = to_full_int8(model_bytes, [np.transpose(f[spec["name"]], spec["perm"]) for f in calib], io_type="int8")

    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(q))
    sub = m.subgraphs[0]
    produced = {int(i) for op in sub.operators for i in op.outputs} | {int(i) for i in sub.inputs}
    wrong = {t.name: t.type for i, t in enumerate(sub.tensors) if i in produced and t.type != schema.TensorType.INT8}
    assert not wrong, f"activation tensors that are not int8: {wrong}"

    feeds = g.feeds(seed=7)
    ref = run_onnx(model, feeds)
    got = run_tflite(q, io, feeds)
    for k in ref:
        assert got[k].shape == ref[k].shape
        assert _sqnr_db(ref[k], got[k]) > 15, f"{k}: SQNR {_sqnr_db(ref[k], got[k]):.1f} dB"
