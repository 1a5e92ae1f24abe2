"""Comparisons and logic: Greater/Less/Equal/GreaterOrEqual/LessOrEqual (bool results),
Not/And/Or/Xor on bool tensors, IsNaN (x != x), and Where (SELECT_V2), all with ONNX
broadcasting and in the layout of their highest-rank variable input.
"""

from __future__ import annotations

from ..context import Context
from ._common import BOP, converter, emit_elementwise, fail

_COMPARE = {
    "Greater": (BOP.GREATER, "GreaterOptions"),
    "Less": (BOP.LESS, "LessOptions"),
    "Equal": (BOP.EQUAL, "EqualOptions"),
    "GreaterOrEqual": (BOP.GREATER_EQUAL, "GreaterEqualOptions"),
    "LessOrEqual": (BOP.LESS_EQUAL, "LessEqualOptions"),
    "And": (BOP.LOGICAL_AND, "LogicalAndOptions"),
    "Or": (BOP.LOGICAL_OR, "LogicalOrOptions"),
    "Xor": (BOP.NOT_EQUAL, "NotEqualOptions"),  # on bool tensors, a != b is exclusive or
}


@converter(*_COMPARE)
def compare(ctx: Context, node):
    types = {ctx.dtype(n) for n in node.input}
    if len(types) != 1:
        fail(node, f"operands of different element types {sorted(t.name for t in types)}")
    if node.op_type == "Equal" and next(iter(types)).kind not in "biuf":
        fail(node, f"comparing {next(iter(types))} tensors is not supported")
    op, opts_name = _COMPARE[node.op_type]
    emit_elementwise(ctx, node, op, opts_name)


@converter("IsNaN")
def is_nan(ctx: Context, node):
    """NaN is the one value not equal to itself (torch's attention export guards its softmax so)."""
    if ctx.dtype(node.input[0]).kind != "f":
        fail(node, f"IsNaN of a {ctx.dtype(node.input[0])} tensor")
    emit_elementwise(ctx, node, BOP.NOT_EQUAL, "NotEqualOptions", names=[node.input[0], node.input[0]])


@converter("Not")
def logical_not(ctx: Context, node):
    emit_elementwise(ctx, node, BOP.LOGICAL_NOT, "LogicalNotOptions")


@converter("Where")
def where(ctx: Context, node):
    if ctx.dtype(node.input[1]) != ctx.dtype(node.input[2]):
        fail(node, "X and Y have different element types")
    emit_elementwise(ctx, node, BOP.SELECT_V2, "SelectV2Options")
