"""Multi-node ONNX idioms emitted as one TFLite op (or one clean sequence), found before
conversion starts:

- GELU in its erf form, x · 0.5 · (1 + erf(x / √2)), and in its tanh form,
  x · 0.5 · (1 + tanh(√(2/π) · (x + 0.044715 · x³))), the three factors multiplied in any
  order and grouping (as torch.onnx, BERT-style code and hand-written graphs spell it):
  one TFLite GELU.
- LayerNorm written out: ReduceMean, Sub, Pow 2 (or Mul), ReduceMean, Add eps, Sqrt,
  Div (or Mul by Reciprocal), then optionally Mul scale and Add bias: the same quantisable
  MEAN/SUB/MUL/RSQRT sequence as LayerNormalization (no DIV, which int8 cannot run).

A pattern's inner nodes go into `ctx.skip`; its last node maps in `ctx.fused` to a
callback that emits the whole pattern.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import numpy_helper

from ..context import Context, attrs
from .elementwise import emit_gelu
from .norm import emit_layer_norm


class _Graph:
    """Read-only helpers over the ONNX graph for matching."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.producers = {o: n for n in ctx.onnx.graph.node for o in n.output}

    def const(self, name):
        c = self.ctx.const(name)
        p = self.producers.get(name)
        if c is None and p is not None and p.op_type == "Constant":
            a = {x.name: x for x in p.attribute}
            if "value" in a:
                c = numpy_helper.to_array(a["value"].t)
            elif "value_float" in a:
                c = np.asarray(a["value_float"].f)
        return c

    def scalar(self, name):
        c = self.const(name)
        return None if c is None or c.size != 1 else float(c.reshape(()))

    def near(self, name, value, tol=1e-3) -> bool:
        v = self.scalar(name)
        return v is not None and abs(v - value) <= tol * max(1.0, abs(value))

    def made_by(self, name, *op_types, single_use=True):
        """The node producing `name` if it is one of `op_types` (and `name` has one reader)."""
        p = self.producers.get(name)
        if p is None or p.op_type not in op_types:
            return None
        if single_use and self.ctx.sole_consumer(name) is None:
            return None
        return p

    def only_user(self, name, *op_types):
        u = self.ctx.sole_consumer(name)
        return u if u is not None and u.op_type in op_types else None

    @staticmethod
    def other(n, name):
        return n.input[1] if n.input[0] == name else n.input[0]


def rewrite_patterns(ctx: Context) -> None:
    g = _Graph(ctx)
    for node in list(ctx.onnx.graph.node):
        if id(node) in ctx.skip:
            continue
        if node.op_type == "Erf":
            _gelu(ctx, g, node, _erf_input(g, node), tanh=False)
        elif node.op_type == "Tanh":
            _gelu(ctx, g, node, _tanh_input(g, node), tanh=True)
        elif node.op_type == "ReduceMean":
            _layer_norm(ctx, g, node)


def _fuse(ctx: Context, chain, emit) -> None:
    for n in chain[:-1]:
        ctx.skip.add(id(n))
    ctx.fused[id(chain[-1])] = emit


# ---------------------------------------------------------------------------------------
# GELU


def _erf_input(g: _Graph, erf):
    """(x, nodes) when erf's argument is x / √2 or x · (1/√2)."""
    s = g.made_by(erf.input[0], "Div", "Mul")
    if s is None:
        return None
    if s.op_type == "Div" and g.near(s.input[1], math.sqrt(2)):
        return s.input[0], [s]
    if s.op_type == "Mul":
        for x, k in _orders(s):
            if g.near(k, 1 / math.sqrt(2)):
                return x, [s]
    return None


def _tanh_input(g: _Graph, tanh):
    """(x, nodes) when tanh's argument is √(2/π) · (x + 0.044715 · x³)."""
    s = g.made_by(tanh.input[0], "Mul")
    if s is None:
        return None
    inner = next((i for i, k in _orders(s) if g.near(k, math.sqrt(2 / math.pi))), None)
    add = g.made_by(inner, "Add") if inner else None
    if add is None:
        return None
    for x, t in _orders(add):
        m = g.made_by(t, "Mul")
        if m is None:
            continue
        cube = next((c for c, k in _orders(m) if g.near(k, 0.044715)), None)
        nodes = _cube_of(g, cube, x) if cube else None
        if nodes is not None:
            return x, nodes + [m, add, s]
    return None


def _orders(n):
    """A binary node's two operands, in both orders."""
    return [(n.input[0], n.input[1]), (n.input[1], n.input[0])]


def _cube_of(g: _Graph, name, x):
    """Nodes computing x³ (Pow(x, 3), or x·x·x in either grouping) into `name`."""
    p = g.made_by(name, "Pow")
    if p is not None and p.input[0] == x and g.near(p.input[1], 3.0, 0):
        return [p]
    m = g.made_by(name, "Mul")
    if m is None or x not in m.input:
        return None
    sq = g.made_by(g.other(m, x), "Mul")
    return [sq, m] if sq is not None and list(sq.input) == [x, x] else None


def _gelu(ctx: Context, g: _Graph, fn_node, found, tanh: bool) -> None:
    """From erf/tanh: + 1, then the factors x and 0.5 in any order (directly, or as one
    Mul(x, 0.5) operand)."""
    if found is None:
        return
    x, chain = found
    add = g.only_user(fn_node.output[0], "Add")
    if add is None or not g.near(g.other(add, fn_node.output[0]), 1.0, 0):
        return
    chain = chain + [fn_node, add]
    cur, need = add.output[0], {"x", "half"}
    while need:
        m = g.only_user(cur, "Mul")
        if m is None:
            return
        o = g.other(m, cur)
        half_x = g.made_by(o, "Mul")
        if o == x and "x" in need:
            need.discard("x")
        elif g.near(o, 0.5, 0) and "half" in need:
            need.discard("half")
        elif half_x is not None and len(need) == 2 and x in half_x.input and g.near(g.other(half_x, x), 0.5, 0):
            need.clear()
            chain.append(half_x)
        else:
            return
        chain.append(m)
        cur = m.output[0]
    out = chain[-1].output[0]
    _fuse(ctx, chain, lambda: emit_gelu(ctx, x, out, tanh))


# ---------------------------------------------------------------------------------------
# LayerNorm written out


def _axes(g: _Graph, node, rank: int):
    """A keepdims ReduceMean's axes (normalised, sorted), else None."""
    a = attrs(node)
    if not a.get("keepdims", 1):
        return None
    if len(node.input) > 1 and node.input[1]:
        c = g.const(node.input[1])
        axes = None if c is None else c.reshape(-1).tolist()
    else:
        axes = a.get("axes")
    return sorted({int(v) % rank for v in axes}) if axes else None


def _layer_norm(ctx: Context, g: _Graph, mean1) -> None:
    x = mean1.input[0]
    if x not in ctx.values and x not in ctx.shapes:
        return
    shape = ctx.onnx_shape(x)
    sub = g.only_user(mean1.output[0], "Sub")
    axes = _axes(g, mean1, len(shape))
    if sub is None or axes is None or list(sub.input) != [x, mean1.output[0]]:
        return
    d = sub.output[0]
    readers = {id(n): n for n in ctx.consumers.get(d, [])}
    sq = next((n for n in readers.values() if n.op_type == "Pow" and n.input[0] == d and g.near(n.input[1], 2.0, 0)
               or n.op_type == "Mul" and list(n.input) == [d, d]), None)
    if sq is None or len(readers) != 2 or d in ctx.graph_outputs:
        return
    mean2 = g.only_user(sq.output[0], "ReduceMean")
    add = g.only_user(mean2.output[0], "Add") if mean2 is not None and _axes(g, mean2, len(shape)) == axes else None
    eps = g.scalar(g.other(add, mean2.output[0])) if add is not None else None
    sqrt = g.only_user(add.output[0], "Sqrt") if eps is not None else None
    if sqrt is None:
        return
    div = next(n for i, n in readers.items() if i != id(sq))
    chain = [mean1, sub, sq, mean2, add, sqrt]
    if div.op_type == "Div" and list(div.input) == [d, sqrt.output[0]]:
        chain.append(div)
    else:
        rec = g.only_user(sqrt.output[0], "Reciprocal")
        if rec is None or div.op_type != "Mul" or set(div.input) != {d, rec.output[0]}:
            return
        chain += [rec, div]
    scale = bias = None
    for op_type in ("Mul", "Add"):  # an affine tail by constants that keep x's shape
        nxt = g.only_user(chain[-1].output[0], op_type)
        k = g.other(nxt, chain[-1].output[0]) if nxt is not None else None
        if k is None or g.const(k) is None or tuple(ctx.shapes.get(nxt.output[0], ((),))[0]) != tuple(shape):
            continue
        chain.append(nxt)
        scale, bias = (k, bias) if op_type == "Mul" else (scale, k)
    _fuse(ctx, chain, lambda: emit_layer_norm(ctx, chain[-1], x, axes, eps, scale, bias, chain[-1].output[0]))
