"""Multi-node ONNX idioms emitted as one TFLite op, found before conversion starts.

Today: Gelu in its Erf form, 0.5 * x * (1 + erf(x / sqrt 2)) in either multiplication
order (and with x * (1 / sqrt 2)). The pattern's inner nodes go into `ctx.skip`; its last
node maps in `ctx.fused` to a callback that emits the single GELU.
"""

from __future__ import annotations

import math

from onnx import numpy_helper

from ..context import Context
from .elementwise import emit_gelu


def rewrite_patterns(ctx: Context) -> None:
    """Recognise multi-node ONNX idioms with a single TFLite op (Gelu in its Erf form)."""
    producers = {o: n for n in ctx.onnx.graph.node for o in n.output}

    def const_val(name):
        c = ctx.const(name)
        if c is None and name in producers and producers[name].op_type == "Constant":
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
        ctx.fused[id(final)] = (lambda x=x, out=final.output[0]: emit_gelu(ctx, x, out, False))
