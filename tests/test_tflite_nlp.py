"""Per-operator parity for what transformers and multi-input models need: comparisons and
logic, Where, Gather, batched MatMul, Softmax on any axis, LayerNorm (op and written out),
Erf/GELU forms, Pow and unary maths, reductions, Cast, Expand/Tile, Slice/Split, Squeeze/
Unsqueeze/Transpose of rank-3/4 activations, and shape arithmetic folded to constants.

Each case builds a small ONNX graph (opset 18 unless noted; integer/bool inputs and
outputs where the op takes them), runs it in onnxruntime and, converted, in LiteRT, on two
feeds. Float outputs compare at rtol 1e-4 / atol 1e-5, integer and bool outputs exactly.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nlp_harness import TypedGraph, check, op_names  # noqa: E402

CASES: dict[str, tuple] = {}  # id -> (build, opset)
I64, I32, BOOL = np.int64, np.int32, np.bool_


def case(id: str, build, opset: int = 18) -> None:
    assert id not in CASES, id
    CASES[id] = (build, opset)


def conv_out(g: TypedGraph, cout: int = 6, h: int = 8, w: int = 8) -> str:
    """An NHWC-produced activation [1, cout, h, w]."""
    return g.conv(g.input("x", [1, 4, h, w]), 4, cout, 3, pads=[1, 1, 1, 1])


def seq(g: TypedGraph, name: str = "x", shape=(2, 5, 8)) -> str:
    return g.input(name, list(shape))


# comparisons, logic, Where ------------------------------------------------------------
COMPARE = ["Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual"]
for _op in COMPARE:
    case(f"{_op}_float_same_shape", lambda g, op=_op: g.op(op, g.op("Round", seq(g, "a")), g.op("Round", seq(g, "b"))))
    case(f"{_op}_after_conv_vs_channel_const", lambda g, op=_op: g.op(op, conv_out(g), g.random((6, 1, 1))))
    case(f"{_op}_int64_vs_scalar", lambda g, op=_op: g.op(op, g.input("ids", [1, 16], I64, 0, 6), g.ints(3)))
    case(f"{_op}_broadcast_rank2_vs_rank3_cast", lambda g, op=_op: g.op(
        "Cast", g.op(op, g.op("Floor", seq(g, "a", (5, 1))), g.op("Floor", seq(g, "b", (2, 1, 4)))), to=1))
for _op in ("And", "Or", "Xor"):
    case(f"{_op}_bool_inputs", lambda g, op=_op: g.op(op, g.input("a", [3, 4], BOOL), g.input("b", [3, 4], BOOL)))
    case(f"{_op}_of_comparisons_broadcast", lambda g, op=_op: g.op(
        op, g.op("Greater", conv_out(g), g.const(np.float32(0))), g.op("Less", g.input("y", [1, 1, 8, 1]),
                                                                         g.const(np.float32(0.3)))))
# torch's attention export guards its softmax with Where(IsNaN(x), 0, x); Log of the N(0, 1)
# input's negative half makes real NaNs for it to find
case("IsNaN_guard", lambda g: (lambda p: g.op("Where", g.op("IsNaN", p), g.const(np.float32(0)), p))(
    g.op("Log", seq(g))))
# a mask flattened with axis == rank (MiniLM's export): (1, 8) -> (8, 1), gathered along axis 0
case("Flatten_axis_rank_then_gather", lambda g: g.op("Gather", g.op("Flatten", g.op(
    "Cast", g.input("m", [1, 8], I64, 0, 2), to=1), axis=2), g.ints([[[0, 3, 7]]]), axis=0))
# a log-mel floor: Clip(x, min = max(x) - 8) with a computed bound (openWakeWord's front end)
case("Clip_computed_min", lambda g: (lambda a: g.op("Clip", a, g.op("Sub", g.op("ReduceMax", a, keepdims=0),
                                                                   g.const(np.float32(1.0)))))(seq(g)))
case("Clip_computed_min_and_max_after_conv", lambda g: (lambda a: g.op(
    "Clip", a, g.op("ReduceMin", a, keepdims=0), g.op("ReduceMean", a, keepdims=0)))(conv_out(g)))
case("Not_bool_input", lambda g: g.op("Not", g.input("a", [2, 3, 4], BOOL)))
case("Not_of_comparison_after_conv", lambda g: g.op("Not", g.op("Greater", conv_out(g), g.const(np.float32(0.1)))))
case("Where_same_shape", lambda g: (lambda a: g.op("Where", g.op("Greater", a, g.const(np.float32(0))), a,
                                                   seq(g, "b")))(seq(g, "a")))
case("Where_scalar_branch_mask", lambda g: g.op("Where", g.op("Cast", g.input("m", [1, 1, 1, 8], I64, 0, 2), to=9),
                                                g.input("s", [1, 2, 8, 8]), g.const(np.float32(-1e4))))
case("Where_cond_broadcast_after_conv", lambda g: g.op("Where", g.input("c", [1, 1, 8, 1], BOOL), conv_out(g),
                                                       g.random((6, 1, 1))))
case("Where_int_branches", lambda g: g.op("Where", g.input("c", [4, 5], BOOL), g.input("a", [4, 5], I64, -9, 9),
                                          g.ints(-1)))

# Gather --------------------------------------------------------------------------------
case("gather_embedding_int64_ids", lambda g: g.op("Gather", g.random((100, 32)), g.input("ids", [1, 16], I64, 0, 100)))
case("gather_embedding_int32_ids", lambda g: g.op("Gather", g.random((50, 8)), g.input("ids", [2, 7], I32, 0, 50)))
case("gather_embedding_1d_ids_plus_position", lambda g: g.op("Add", g.op(
    "Gather", g.random((30, 8)), g.input("ids", [6], I64, 0, 30)), g.random((6, 8))))
case("gather_table_axis1_ids", lambda g: g.op("Gather", g.random((4, 30)), g.input("ids", [3], I64, 0, 30), axis=1))
case("gather_scalar_index_cls_token", lambda g: g.op("Gather", seq(g), g.ints(0), axis=1))
case("gather_const_indices_channels_after_conv", lambda g: g.op("Gather", conv_out(g), g.ints([2, 0, 5]), axis=1))
case("gather_scalar_channel_after_conv", lambda g: g.op("Gather", conv_out(g), g.ints(-1), axis=1))
case("gather_2d_indices_width_after_conv", lambda g: g.op("Gather", conv_out(g), g.ints([[1, 2], [7, 0]]), axis=3))
case("gather_negative_axis_3d", lambda g: g.op("Gather", seq(g), g.ints([-1, 0, 3]), axis=-1))
case("gather_variable_data_and_ids", lambda g: g.op("Gather", seq(g), g.input("i", [3], I64, 0, 5), axis=1))
case("gather_int_data", lambda g: g.op("Gather", g.input("t", [6, 4], I64, -50, 50), g.ints([5, 1]), axis=0))

# MatMul --------------------------------------------------------------------------------
case("matmul_rank3_variables", lambda g: g.op("MatMul", seq(g, "a", (2, 4, 5)), seq(g, "b", (2, 5, 3))))
case("matmul_rank4_q_kT", lambda g: g.op("MatMul", seq(g, "q", (1, 2, 6, 4)), g.op(
    "Transpose", seq(g, "k", (1, 2, 6, 4)), perm=[0, 1, 3, 2])))
case("matmul_rank4_heads_from_rank3", lambda g: (lambda q: g.op("MatMul", q, g.op("Transpose", q, perm=[0, 1, 3, 2])))(
    g.op("Transpose", g.op("Reshape", seq(g, "x", (1, 6, 8)), g.ints([1, 6, 2, 4])), perm=[0, 2, 1, 3])))
case("matmul_broadcast_rank4_vs_rank3", lambda g: g.op("MatMul", seq(g, "a", (2, 3, 4, 5)), seq(g, "b", (3, 5, 2))))
case("matmul_broadcast_batch_ones", lambda g: g.op("MatMul", seq(g, "a", (2, 1, 4, 5)), seq(g, "b", (1, 3, 5, 2))))
case("matmul_rank3_vs_rank2_variable", lambda g: g.op("MatMul", seq(g, "a", (2, 4, 5)), seq(g, "b", (5, 3))))
case("matmul_1d_lhs_variable", lambda g: g.op("MatMul", seq(g, "a", (5,)), seq(g, "b", (2, 5, 3))))
case("matmul_1d_rhs_variable", lambda g: g.op("MatMul", seq(g, "a", (2, 4, 5)), seq(g, "b", (5,))))
case("matmul_1d_both", lambda g: g.op("MatMul", seq(g, "a", (5,)), seq(g, "b", (5,))))
case("matmul_both_transposed", lambda g: g.op("MatMul", g.op("Transpose", seq(g, "a", (2, 5, 4)), perm=[0, 2, 1]),
                                              g.op("Transpose", seq(g, "b", (2, 3, 5)), perm=[0, 2, 1])))
case("matmul_const_rank3_rhs", lambda g: g.op("MatMul", seq(g, "a", (2, 4, 5)), g.random((2, 5, 3))))
case("attention_block", lambda g: (lambda q, k, v: g.op("MatMul", g.op("Softmax", g.op("Mul", g.op(
    "MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), g.const(np.float32(0.5))), axis=-1), v))(
    seq(g, "q", (1, 2, 6, 4)), seq(g, "k", (1, 2, 6, 4)), seq(g, "v", (1, 2, 6, 4))))

# Softmax on any axis -------------------------------------------------------------------
for _axis in (-1, 0, 1, 2, 3):
    case(f"softmax_rank4_axis{_axis}", lambda g, a=_axis: g.op("Softmax", seq(g, "x", (2, 3, 4, 5)), axis=a))
case("softmax_rank3_axis1_transposed", lambda g: g.op("Softmax", g.op("Transpose", seq(g), perm=[0, 2, 1]), axis=1))
case("log_softmax_rank3_axis0", lambda g: g.op("LogSoftmax", seq(g), axis=0))
case("softmax_opset11_axis1_flattens", lambda g: g.op("Softmax", seq(g, "x", (2, 3, 4, 5)), axis=1), opset=11)
case("softmax_opset11_default_axis", lambda g: g.op("Softmax", seq(g)), opset=11)
case("softmax_opset11_last_axis", lambda g: g.op("Softmax", seq(g), axis=2), opset=11)


# LayerNorm -----------------------------------------------------------------------------
def _ln(shape, axis=-1, bias=True, eps=1e-5, after_conv=False):
    def build(g: TypedGraph):
        x = conv_out(g) if after_conv else seq(g, "x", shape)
        full = (1, 6, 8, 8) if after_conv else shape
        norm = full[axis % len(full):]
        ins = [x, g.const(g.rng.uniform(0.5, 1.5, norm).astype(np.float32))] + ([g.random(norm, 0.3)] if bias else [])
        return g.op("LayerNormalization", *ins, axis=axis, epsilon=eps)

    return build


case("layernorm_last_axis", _ln((2, 5, 8)), opset=17)
case("layernorm_two_axes", _ln((2, 5, 8), axis=-2), opset=17)
case("layernorm_no_bias_eps", _ln((3, 8), bias=False, eps=1e-3), opset=17)
case("layernorm_axis1_after_conv", _ln(None, axis=1, after_conv=True), opset=17)
case("layernorm_last_axis_after_conv", _ln(None, axis=-1, after_conv=True))


def _ln_written(square="pow", div="div", affine=True, axes=(-1,), after_conv=False, opset=18):
    def build(g: TypedGraph):
        x = conv_out(g) if after_conv else seq(g)

        def mean(v):
            return g.op("ReduceMean", v, g.ints(list(axes))) if opset >= 18 else g.op("ReduceMean", v, axes=list(axes))

        d = g.op("Sub", x, mean(x))
        sq = g.op("Pow", d, g.const(np.float32(2))) if square == "pow" else g.op("Mul", d, d)
        sd = g.op("Sqrt", g.op("Add", mean(sq), g.const(np.float32(1e-5))))
        y = g.op("Div", d, sd) if div == "div" else g.op("Mul", g.op("Reciprocal", sd), d)
        if affine:
            shape = (6, 1, 1) if after_conv else (8,)
            y = g.op("Add", g.random(shape, 0.3), g.op("Mul", y, g.const(g.rng.uniform(0.5, 1.5, shape))))
        return y

    return build


case("layernorm_written_pow_div_affine", _ln_written())
case("layernorm_written_mul_reciprocal", _ln_written(square="mul", div="reciprocal"))
case("layernorm_written_no_affine", _ln_written(affine=False))
case("layernorm_written_opset13_axes_attribute", _ln_written(opset=13), opset=13)
case("layernorm_written_channels_after_conv", _ln_written(axes=(1,), after_conv=True))


# Erf, GELU -----------------------------------------------------------------------------
def _gelu(kind: str):
    def k(g, v):
        return g.op("Constant", value=numpy_helper.from_array(np.asarray(v, np.float32)))

    def build(g: TypedGraph):
        x = seq(g)
        if kind.startswith("erf"):
            phi = g.op("Add", g.op("Erf", g.op("Div", x, k(g, math.sqrt(2)))), k(g, 1.0))
            if kind == "erf_half_phi_then_x":  # torch.onnx (dynamo): x * (0.5 * (1 + erf))
                return g.op("Mul", x, g.op("Mul", k(g, 0.5), phi))
            return g.op("Mul", g.op("Mul", phi, k(g, 0.5)), x)
        cube = g.op("Pow", x, k(g, 3.0)) if kind == "tanh_pow" else g.op("Mul", x, g.op("Mul", x, x))
        inner = g.op("Mul", k(g, math.sqrt(2 / math.pi)), g.op("Add", x, g.op("Mul", k(g, 0.044715), cube)))
        return g.op("Mul", g.op("Mul", x, k(g, 0.5)), g.op("Add", g.op("Tanh", inner), k(g, 1.0)))

    return build


for _kind in ("erf_half_phi_then_x", "erf_phi_half_x", "tanh_pow", "tanh_cube_mul"):
    case(f"gelu_{_kind}", _gelu(_kind))
case("erf_standalone_wide", lambda g: g.op("Erf", g.input("x", [4, 64], np.float32, -5.0, 5.0)))
case("erf_after_conv", lambda g: g.op("Erf", conv_out(g)))
case("erf_with_other_reader", lambda g: (lambda e: g.op("Add", e, g.op("Mul", e, g.const(np.float32(2)))))(
    g.op("Erf", g.op("Div", seq(g), g.const(np.float32(math.sqrt(2)))))))

# Pow and unary maths -------------------------------------------------------------------
for _e in (2.0, 0.5, -0.5, 1.0, -1.0, 3.0, 1.7):
    case(f"pow_exponent_{_e}", lambda g, e=_e: g.op("Pow", g.positive("x", [2, 5, 8]), g.const(np.float32(e))))
case("pow_exponent_int64_const", lambda g: g.op("Pow", seq(g), g.ints(2)))
case("pow_tensor_exponent_broadcast", lambda g: g.op("Pow", g.positive("x", [2, 5, 8]), g.random((8,), 1.0)))
case("pow_variable_exponent", lambda g: g.op("Pow", g.positive("x", [3, 4]), g.input("e", [3, 4], np.float32, -2, 2)))
case("pow_int_base_square", lambda g: g.op("Pow", g.input("x", [3, 4], I64, -9, 9), g.ints(2)))
for _op in ("Sqrt", "Reciprocal", "Log", "Exp"):
    case(f"{_op.lower()}_rank3", lambda g, op=_op: g.op(op, g.positive("x", [2, 5, 8])))
for _op in ("Sin", "Cos", "Sign", "Neg", "Abs"):
    case(f"{_op.lower()}_after_conv", lambda g, op=_op: g.op(op, conv_out(g)))
case("round_half_to_even", lambda g: g.op("Round", g.op("Mul", g.op("Round", g.input("x", [4, 16], np.float32, -6, 6)),
                                                         g.const(np.float32(0.5)))))
case("neg_abs_int", lambda g: g.op("Abs", g.op("Neg", g.input("x", [3, 4], I64, -9, 9))))
case("clip_int", lambda g: g.op("Clip", g.input("x", [3, 4], I64, -9, 9), g.ints(-2), g.ints(5)))


# reductions ----------------------------------------------------------------------------
def _reduce(op, axes, keepdims, where="conv", attr=False):
    def build(g: TypedGraph):
        x = conv_out(g) if where == "conv" else g.input("x", [2, 3, 4], np.float32, 0.5, 1.5) if op == "ReduceProd" \
            else seq(g)
        extra = {"keepdims": keepdims}
        if axes is None:
            return g.op(op, x, **extra)
        return g.op(op, x, axes=list(axes), **extra) if attr else g.op(op, x, g.ints(list(axes)), **extra)

    return build


for _op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
            "ReduceSumSquare"):
    _w = "seq" if _op == "ReduceProd" else "conv"
    for _axes, _keep in (((1,), 0), ((-1,), 1), ((1, 2), 0), ((2, 3), 1), (None, 0)):
        if _w == "seq" and _axes and max(_axes) > 2:
            continue
        case(f"{_op}_axes{_axes}_keep{_keep}", _reduce(_op, _axes, _keep, _w))
    case(f"{_op}_seq_axis1_keep1", _reduce(_op, (1,), 1, "seq"))
    case(f"{_op}_opset13_axes_attribute", _reduce(_op, (1,), 0, "seq", attr=_op != "ReduceSum"), opset=13)
case("reduce_sum_int64_mask", lambda g: g.op("ReduceSum", g.input("m", [2, 16], I64, 0, 2), g.ints([1]), keepdims=1))
case("reduce_max_noop_empty_axes", lambda g: g.op("ReduceMax", seq(g), noop_with_empty_axes=1))

# Cast ----------------------------------------------------------------------------------
case("cast_float_to_int32_truncates", lambda g: g.op("Cast", g.input("x", [3, 8], np.float32, -5, 5), to=6))
case("cast_float_to_int64_output", lambda g: g.op("Cast", g.input("x", [3, 8], np.float32, -5, 5), to=7))
case("cast_float_int64_float", lambda g: g.op("Cast", g.op("Cast", g.op("Mul", conv_out(g), g.const(np.float32(3))),
                                                            to=7), to=1))
case("cast_int64_to_float", lambda g: g.op("Cast", g.input("m", [1, 16], I64, 0, 2), to=1))
case("cast_int64_to_int32", lambda g: g.op("Cast", g.input("m", [1, 16], I64, -99, 99), to=6))
case("cast_float_to_bool", lambda g: g.op("Cast", g.op("Round", seq(g)), to=9))
case("cast_bool_to_float_and_int", lambda g: (lambda b: (g.op("Cast", b, to=1), g.op("Cast", b, to=7)))(
    g.input("b", [4, 5], BOOL)))
case("additive_mask_from_int64", lambda g: g.op("Unsqueeze", g.op("Mul", g.op("Sub", g.const(np.float32(1)), g.op(
    "Cast", g.input("mask", [2, 16], I64, 0, 2), to=1)), g.const(np.float32(-1e4))), g.ints([1, 2])))

# Expand, Tile --------------------------------------------------------------------------
case("expand_rank_up", lambda g: g.op("Expand", seq(g, "x", (5, 1)), g.ints([2, 5, 8])))
case("expand_channels_after_gap", lambda g: g.op("Expand", g.op("GlobalAveragePool", conv_out(g)),
                                                 g.ints([1, 6, 3, 4])))
case("expand_noop", lambda g: g.op("Expand", seq(g), g.ints([1, 1, 8])))
case("expand_int_mask", lambda g: g.op("Expand", g.op("Unsqueeze", g.input("m", [1, 16], I64, 0, 2), g.ints([2])),
                                       g.ints([1, 16, 8])))
case("tile_rank3", lambda g: g.op("Tile", seq(g), g.ints([2, 1, 3])))
case("tile_after_conv", lambda g: g.op("Tile", conv_out(g), g.ints([1, 2, 1, 2])))

# Slice, Split, Squeeze, Unsqueeze, Transpose on rank-3/4 activations --------------------
case("slice_rank3_last_axis_reverse", lambda g: g.op("Slice", seq(g), g.ints([-1]), g.ints([-(2**63)]), g.ints([-1]),
                                                     g.ints([-1])))
case("slice_rank3_axis1_step_minus2", lambda g: g.op("Slice", seq(g), g.ints([4]), g.ints([0]), g.ints([1]),
                                                     g.ints([-2])))
case("slice_after_conv_channels_reverse_width_step", lambda g: g.op(
    "Slice", conv_out(g), g.ints([5, 1]), g.ints([-100, 8]), g.ints([1, 3]), g.ints([-1, 3])))
case("split_rank3_last_axis_num_outputs", lambda g: g.op("Split", seq(g, "x", (2, 5, 9)), axis=-1, num_outputs=3,
                                                         outputs=3))
case("split_opset11_attribute", lambda g: g.op("Split", seq(g), axis=1, split=[2, 3], outputs=2), opset=11)
case("split_qkv", lambda g: g.op("Split", g.op("MatMul", seq(g), g.random((8, 24))), g.ints([8, 8, 8]), axis=2,
                                 outputs=3))
for _axes in ((0,), (2,), (4,), (1, 3)):
    case(f"unsqueeze_after_conv_{_axes}", lambda g, a=_axes: g.op("Relu", g.op("Unsqueeze", conv_out(g),
                                                                                g.ints(list(a)))))
case("unsqueeze_then_softmax_rank5", lambda g: g.op("Softmax", g.op("Unsqueeze", conv_out(g), g.ints([2])), axis=1))
case("squeeze_keepdims_mean_after_conv", lambda g: g.op("Squeeze", g.op("ReduceMean", conv_out(g), g.ints([2])),
                                                        g.ints([2])))
case("squeeze_rank3", lambda g: g.op("Squeeze", seq(g, "x", (2, 1, 8)), g.ints([1])))
case("squeeze_opset11_attribute", lambda g: g.op("Squeeze", seq(g, "x", (2, 1, 8)), axes=[1]), opset=11)
case("transpose_rank3_then_add", lambda g: g.op("Add", g.op("Transpose", seq(g), perm=[0, 2, 1]), g.random((8, 5))))
case("transpose_rank4_heads_back", lambda g: g.op("Reshape", g.op("Transpose", seq(g, "x", (1, 2, 6, 4)),
                                                                  perm=[0, 2, 1, 3]), g.ints([1, 6, 8])))

# shapes folded to constants -------------------------------------------------------------
case("reshape_by_shape_arithmetic", lambda g: (lambda x: g.op("Reshape", x, g.op(
    "Concat", g.op("Slice", g.op("Shape", x), g.ints([0]), g.ints([1])), g.ints([-1]), axis=0)))(seq(g)))
case("shape_start_end_gather", lambda g: (lambda x: g.op("Reshape", x, g.op("Concat", g.op("Shape", x, start=0, end=2),
                                                                          g.ints([2, 4]), axis=0)))(seq(g)))
case("constant_of_shape_of_input", lambda g: (lambda x: g.op("Add", x, g.op(
    "ConstantOfShape", g.op("Shape", x), value=numpy_helper.from_array(np.asarray([0.5], np.float32)))))(seq(g)))
case("range_positions_plus_size", lambda g: (lambda x: g.op("Add", x, g.op("Cast", g.op(
    "Range", g.ints(0), g.op("Gather", g.op("Shape", x), g.ints(2)), g.ints(1)), to=1)))(seq(g)))
case("size_folded", lambda g: (lambda x: g.op("Div", x, g.op("Cast", g.op("Size", x), to=1)))(seq(g)))
case("multi_input_image_and_ids", lambda g: (g.op("Relu", conv_out(g)), g.op("Gather", g.random((10, 3)), g.input(
    "ids", [1, 4], I64, 0, 10)), g.op("Identity", g.input("flags", [1, 2, 3, 4], I64, 0, 9))))


@pytest.mark.parametrize("cid", list(CASES))
def test_parity(cid: str):
    build, opset = CASES[cid]
    g = TypedGraph()
    outs = build(g)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    check(g.model(*outs, opset=opset), g)


def test_patterns_become_one_op():
    """GELU forms become one GELU and LayerNorm written out the RSQRT sequence (no DIV)."""
    for kind in ("erf_half_phi_then_x", "tanh_pow", "tanh_cube_mul"):
        g = TypedGraph()
        ops = op_names(check(g.model(_gelu(kind)(g)), g))
        assert ops == ["GELU"], (kind, ops)
    g = TypedGraph()
    ops = op_names(check(g.model(_ln_written()(g)), g))
    assert "DIV" not in ops and "SQRT" not in ops and "RSQRT" in ops and "POW" not in ops, ops
    g = TypedGraph()
    ops = op_names(check(g.model(CASES["matmul_rank4_heads_from_rank3"][0](g)), g))
    # One TRANSPOSE makes the heads, Qᵀ is read from it with adjY; the last one is the
    # rank-4 float output's NHWC layout.
    assert ops == ["RESHAPE", "TRANSPOSE", "BATCH_MATMUL", "TRANSPOSE"], ops
