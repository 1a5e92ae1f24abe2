"""Normalisation and special functions with no single TFLite op: LayerNormalization (as
MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL — every piece quantisable to int8; also emitted for
the decomposed ReduceMean/Sub/Pow/…/Div idiom, see patterns.py) and Erf (a rational
approximation, |error| < 5e-7 in float32).
"""

from __future__ import annotations

import numpy as np

from ..builder import options
from ..context import Context, attrs, inverse
from ._common import BOP, aligned, converter, fail, static_shape

# erf(x) = x·P(u)/Q(u), u = x²/16, x clamped to [-4, 4] (erf is ±1 in float32 beyond):
# Eigen's float erf coefficients (also XLA's), rescaled to u so that none is tiny (float16).
_ERF_P = [-1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04, -5.69250639462346e-05,
          -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10]
_ERF_Q = [-1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03, -2.13374055278905e-04,
          -1.45660718464996e-05]


@converter("LayerNormalization")
def layer_norm(ctx: Context, node):
    a = attrs(node)
    for extra in node.output[1:]:
        if extra and (ctx.consumers.get(extra) or extra in ctx.graph_outputs):
            fail(node, "the Mean / InvStdDev outputs (training) are not supported")
    x = node.input[0]
    rank = len(ctx.shape(x))
    axis = a.get("axis", -1) % rank
    scale = node.input[1] if len(node.input) > 1 and node.input[1] else None
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    emit_layer_norm(ctx, node, x, list(range(axis, rank)), a.get("epsilon", 1e-5), scale, bias, node.output[0])


def emit_layer_norm(ctx: Context, node, x: str, axes, eps: float, scale: str | None, bias: str | None, out_name: str):
    """(x - mean) · rsqrt(mean((x - mean)²) + eps) [· scale] [+ bias] over ONNX `axes`."""
    if ctx.dtype(x).kind != "f":
        fail(node, "normalising a non-float tensor")
    shape = ctx.shape(x)
    rank, perm = len(shape), ctx.perm_of(x)
    tshape = tuple(shape[p] for p in perm)
    t_axes = np.asarray(sorted(inverse(perm)[a] for a in axes), np.int32)
    kept = tuple(1 if i in t_axes else d for i, d in enumerate(tshape))
    base = out_name

    def step(op, ins, suffix, shp=tshape, opts=None):
        t = ctx.b.tensor(f"{base}_{suffix}", shp)
        ctx.b.op(op, ins, [t], *(opts or (None, 0)))
        return t

    def mean(src, suffix):
        return step(BOP.MEAN, [src, ctx.b.const(f"{base}_axes", t_axes)], suffix, kept,
                    options("ReducerOptions", keepDims=True))

    xin = ctx.get(x, perm)
    centred = step(BOP.SUB, [xin, mean(xin, "mean")], "centred", opts=options("SubOptions"))
    var = mean(step(BOP.MUL, [centred, centred], "squared", opts=options("MulOptions")), "var")
    var = step(BOP.ADD, [var, ctx.b.const(f"{base}_eps", np.asarray(eps, np.float32))], "var_eps", kept,
               options("AddOptions"))
    inv = step(BOP.RSQRT, [var], "rsqrt", kept)
    tail = [(BOP.MUL, "MulOptions", scale), (BOP.ADD, "AddOptions", bias)]
    tail = [t for t in tail if t[2] is not None]
    cur = ctx.output(out_name, static_shape(ctx, out_name, node), perm) if not tail else \
        ctx.b.tensor(f"{base}_normalised", tshape)
    ctx.b.op(BOP.MUL, [centred, inv], [cur], *options("MulOptions"))
    for i, (op, opts, name) in enumerate(tail):
        last = i == len(tail) - 1
        nxt = ctx.output(out_name, static_shape(ctx, out_name, node), perm) if last else \
            ctx.b.tensor(f"{base}_scaled", tshape)
        ctx.b.op(op, [cur, aligned(ctx, name, rank, perm)], [nxt], *options(opts))
        cur = nxt


@converter("Erf")
def erf(ctx: Context, node):
    x = node.input[0]
    if ctx.dtype(x).kind != "f":
        fail(node, f"Erf of {ctx.dtype(x)}")
    perm = ctx.perm_of(x)
    xin = ctx.get(x, perm)
    shape = ctx.b.shape_of(xin)
    base = node.output[0]

    def op(kind, ins, suffix, opts):
        t = ctx.b.tensor(f"{base}_{suffix}", shape)
        ctx.b.op(kind, ins, [t], *options(opts))
        return t

    def k(v):
        return ctx.b.const(f"{base}_k", np.asarray(v, np.float32))

    xc = op(BOP.MINIMUM, [op(BOP.MAXIMUM, [xin, k(-4.0)], "lo", "MaximumMinimumOptions"), k(4.0)], "clamped",
            "MaximumMinimumOptions")
    u = op(BOP.MUL, [op(BOP.MUL, [xc, xc], "sq", "MulOptions"), k(1 / 16)], "u", "MulOptions")

    def poly(coeffs, name):
        scaled = [c * 16.0**i for i, c in enumerate(coeffs)]
        acc = op(BOP.MUL, [u, k(scaled[-1])], f"{name}_m", "MulOptions")
        for i, c in enumerate(reversed(scaled[:-1])):
            acc = op(BOP.ADD, [acc, k(c)], f"{name}_a", "AddOptions")
            if i < len(scaled) - 2:
                acc = op(BOP.MUL, [acc, u], f"{name}_m", "MulOptions")
        return acc

    num = op(BOP.MUL, [xc, poly(_ERF_P, "p")], "num", "MulOptions")
    out = ctx.output(node.output[0], ctx.shape(x), perm)
    ctx.b.op(BOP.DIV, [num, poly(_ERF_Q, "q")], [out], *options("DivOptions"))
