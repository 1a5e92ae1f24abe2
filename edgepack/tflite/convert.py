"""ONNX → TFLite float32: the driver.

`convert()` sets up a `Context` (see `context.py` for the layout bookkeeping), recognises
multi-node patterns, then walks the graph in order: each node is skipped (absorbed into
another op), emitted as part of a fused pattern, folded as a constant, or handed to its
converter from the op table in `ops/`. Finally it binds the graph I/O in the requested
layout and drops whatever no output depends on.
"""

from __future__ import annotations

import onnx

from ..errors import UnsupportedOperatorError
from .builder import ModelBuilder
from .context import NHWC, Context, identity
from .ops import CONVERTERS, fold_constant, rewrite_patterns


def convert(model: onnx.ModelProto, io_layout: str = "NHWC") -> tuple[bytes, dict]:
    """Convert a cleaned, statically shaped float ONNX model; returns (flatbuffer, io info).

    io info: {"inputs": [{"name", "shape", "layout"}], "outputs": [...]} describing the
    TFLite model's own I/O tensors."""
    model = onnx.shape_inference.infer_shapes(model)
    ctx = Context(model)
    inits = {i.name for i in model.graph.initializer}
    io = {"inputs": [], "outputs": []}
    in_indices, out_indices = [], []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape, dtype = ctx.shapes[vi.name]
        perm = NHWC if (len(shape) == 4 and io_layout == "NHWC") else identity(len(shape))
        in_indices.append(ctx.output(vi.name, shape, perm, dtype))
        io["inputs"].append({"name": vi.name, "shape": [shape[p] for p in perm],
                             "layout": _layout_name(len(shape), perm), "perm": list(perm)})
    rewrite_patterns(ctx)
    for node in model.graph.node:
        if id(node) in ctx.skip:
            continue
        if id(node) in ctx.fused:
            ctx.fused[id(node)]()
            continue
        if fold_constant(ctx, node):
            continue
        fn = CONVERTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if fn is None:
            raise UnsupportedOperatorError(
                f"node '{node.name}': ONNX op {node.domain + '.' if node.domain else ''}{node.op_type} has no TFLite "
                f"equivalent in edgepack; supported: {', '.join(sorted(CONVERTERS))}"
            )
        fn(ctx, node)
    for o in model.graph.output:
        v = ctx.value(o.name)
        want = NHWC if (v.rank == 4 and io_layout == "NHWC") else identity(v.rank)
        idx = ctx.get(o.name, want)
        if idx in in_indices or idx in out_indices or v.const is not None:
            # A graph output must be a tensor of its own: copy through a no-op reshape.
            src, idx = idx, ctx.b.tensor(o.name, ctx.b.shape_of(idx), ctx._np_dtype(idx))
            ctx.reshape_to(src, idx, ctx.b.shape_of(idx))
        for t in ctx.b.graph.tensors:
            if t.name == o.name:
                t.name = f"{o.name}_internal"
        ctx.b.graph.tensors[idx].name = o.name
        out_indices.append(idx)
        io["outputs"].append({"name": o.name, "shape": list(ctx.b.shape_of(idx)), "layout": _layout_name(v.rank, want),
                              "perm": list(want)})
    ctx.b.set_io(in_indices, out_indices)
    _prune_dead(ctx.b)
    return ctx.b.finish(), io


def _layout_name(rank: int, perm) -> str:
    if rank == 4:
        return "NHWC" if tuple(perm) == NHWC else "NCHW"
    return {2: "NC", 3: "NCL"}.get(rank, "ND")


def _prune_dead(b: ModelBuilder) -> None:
    """Drop operators nobody reads, then tensors and buffers nothing references."""
    g = b.graph
    needed = {int(i) for i in g.outputs}
    keep = []
    for op in reversed(g.operators):
        if any(int(o) in needed for o in op.outputs):
            keep.append(op)
            needed.update(int(i) for i in op.inputs if i >= 0)
    g.operators = list(reversed(keep))
    b.compact()
