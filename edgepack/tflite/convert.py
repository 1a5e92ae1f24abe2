"""ONNX → TFLite float32: the driver.

`convert()` sets up a `Context` (see `context.py` for the layout bookkeeping), recognises
multi-node patterns, then walks the graph in order: each node is skipped (absorbed into
another op), emitted as part of a fused pattern, folded as a constant, or handed to its
converter from the op table in `ops/`. Finally it binds the graph I/O in the requested
layout and drops whatever no output depends on.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import UnsupportedOperatorError
from .builder import ModelBuilder
from .context import BOP, NHWC, Context, identity, tfl_dtype
from .inline import inline_foldable_ifs
from .ops import CONVERTERS, fold_constant, rewrite_patterns


def convert(model: onnx.ModelProto, io_layout: str = "NHWC") -> tuple[bytes, dict]:
    """Convert a cleaned, statically shaped ONNX model; returns (flatbuffer, io info).

    Every graph input becomes a TFLite input of its own type; only image-like ones (rank-4
    floating point) take the NHWC layout when `io_layout` is "NHWC", likewise for outputs.
    io info: {"inputs": [{"name", "shape", "dtype", "layout", "perm"}], "outputs": [...]}
    describing the TFLite model's own I/O tensors (shape in TFLite layout; perm maps ONNX
    layout to it: tflite = onnx.transpose(perm))."""
    model = inline_foldable_ifs(model)  # an If whose condition folds: its taken branch
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    ctx = Context(model)
    inits = {i.name for i in model.graph.initializer}
    io = {"inputs": [], "outputs": []}
    in_indices, out_indices = [], []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape, dtype = ctx.shapes[vi.name]
        perm = NHWC if _image_like(shape, dtype, io_layout) else identity(len(shape))
        in_indices.append(_bind_input(ctx, vi.name, shape, perm, np.dtype(dtype)))
        io["inputs"].append({"name": vi.name, "shape": [shape[p] for p in perm], "dtype": np.dtype(dtype).name,
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
        dtype = np.dtype(ctx.shapes[o.name][1]) if o.name in ctx.shapes else np.dtype(v.dtype)
        if dtype not in _IO_TYPES:
            raise UnsupportedOperatorError(f"graph output '{o.name}': element type {dtype} is not supported "
                                           f"({', '.join(t.name for t in _IO_TYPES)} are)")
        want = NHWC if _image_like(v.shape, dtype, io_layout) else identity(v.rank)
        idx = ctx.get(o.name, want)
        if idx in in_indices or idx in out_indices or v.const is not None or np.dtype(ctx._np_dtype(idx)) != dtype:
            # A graph output must be a tensor of its own, in its ONNX type (int64 values live
            # as int32 inside): copy through a no-op reshape or a CAST.
            src, idx = idx, ctx.b.tensor(o.name, ctx.b.shape_of(idx), dtype)
            if np.dtype(ctx._np_dtype(src)) != dtype:
                ctx.b.op(BOP.CAST, [src], [idx])
            else:
                ctx.reshape_to(src, idx, ctx.b.shape_of(idx))
        for t in ctx.b.graph.tensors:
            if t.name == o.name:
                t.name = f"{o.name}_internal"
        ctx.b.graph.tensors[idx].name = o.name
        out_indices.append(idx)
        io["outputs"].append({"name": o.name, "shape": list(ctx.b.shape_of(idx)), "dtype": dtype.name,
                              "layout": _layout_name(v.rank, want), "perm": list(want)})
    ctx.b.set_io(in_indices, out_indices)
    _prune_dead(ctx.b)
    return ctx.b.finish(), io


_IO_TYPES = [np.dtype(t) for t in (np.float32, np.int64, np.int32, np.bool_, np.uint8, np.int8)]


def _image_like(shape, dtype, io_layout: str) -> bool:
    """Inputs/outputs that take the NHWC layout: rank-4 floating-point tensors."""
    return len(shape) == 4 and np.dtype(dtype).kind == "f" and io_layout == "NHWC"


def _bind_input(ctx: Context, name: str, shape, perm, dtype: np.dtype) -> int:
    """The TFLite input tensor for ONNX graph input `name`, in its own type. An int64 input
    stays int64 at the model's boundary and is cast once to int32 for the kernels inside."""
    if dtype not in _IO_TYPES:
        raise UnsupportedOperatorError(f"graph input '{name}': element type {dtype} is not supported "
                                       f"({', '.join(t.name for t in _IO_TYPES)} are)")
    if tfl_dtype(dtype) == dtype:
        return ctx.output(name, shape, perm, dtype)
    index = ctx.b.tensor(name, [shape[p] for p in perm], dtype)
    inner = ctx.output(name, shape, perm, tfl_dtype(dtype))
    ctx.b.graph.tensors[inner].name = ctx.b._unique(f"{name}_{tfl_dtype(dtype).name}")
    ctx.b.op(BOP.CAST, [index], [inner])
    return index


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
