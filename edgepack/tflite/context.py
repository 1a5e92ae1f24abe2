"""The conversion state every op converter works on: values, their layouts, the builder.

Every ONNX value maps to a TFLite tensor plus a permutation `perm` with
`tflite_tensor = onnx_value.transpose(perm)`. Convolution-like ops produce NHWC
(perm (0, 2, 3, 1)); layout-sensitive ops (reshape, flatten, softmax on an axis, concat,
slice, reductions …) translate their axes through `perm`, or ask for the value in the
layout they need and get a TRANSPOSE (or a free RESHAPE when only size-1 axes move)
inserted once and cached. Nothing is guessed: a value's layout is always known. This
module imports neither the driver (`convert`) nor the op table (`ops`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import UnsupportedOperatorError
from .builder import ModelBuilder, options, schema

NHWC = (0, 2, 3, 1)
BOP = schema.BuiltinOperator


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def inverse(perm) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def relative(src, dst) -> tuple[int, ...]:
    """Permutation r with X.transpose(dst) == X.transpose(src).transpose(r)."""
    inv = inverse(src)
    return tuple(inv[d] for d in dst)


def moves_only_unit_axes(shape, perm) -> bool:
    """True when transposing `shape` by `perm` keeps the order of axes larger than 1, so
    the memory order is unchanged and a RESHAPE suffices."""
    big = [a for a in perm if shape[a] != 1]
    return big == sorted(big)


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def tfl_dtype(dtype) -> np.dtype:
    """The TFLite element type that holds ONNX `dtype` inside the model: int64 values are
    int32 (the type every integer kernel takes; graph I/O keeps int64 through a CAST),
    float64 constants are float32."""
    dtype = np.dtype(dtype)
    return {np.dtype(np.int64): np.dtype(np.int32), np.dtype(np.float64): np.dtype(np.float32)}.get(dtype, dtype)


def tfl_array(data: np.ndarray) -> np.ndarray:
    """A constant in its TFLite element type (int64 beyond int32's range stays int64)."""
    data = np.asarray(data)
    if data.dtype == np.int64 and not np.all(np.abs(data) < 2**31):
        return data
    return data.astype(tfl_dtype(data.dtype), copy=False)


@dataclass
class Value:
    shape: tuple[int, ...]  # ONNX (logical) shape
    dtype: np.dtype
    perm: tuple[int, ...] = ()
    index: int | None = None  # TFLite tensor holding onnx_value.transpose(perm)
    const: np.ndarray | None = None  # known constant, ONNX layout
    cache: dict = field(default_factory=dict)  # perm -> tensor index
    source: tuple | None = None  # (Value X, q) when this value is X.transpose(q): X's layouts are its own

    @property
    def rank(self) -> int:
        return len(self.shape)


class Context:
    """What converters use: look values up in a layout, add tensors and ops, bind outputs."""

    b: ModelBuilder
    onnx: onnx.ModelProto
    values: dict[str, Value]  # ONNX value name -> where and how it lives in TFLite
    consumers: dict[str, list[onnx.NodeProto]]  # ONNX value name -> nodes reading it
    graph_outputs: set[str]
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]]  # inferred (shape, dtype) by value name
    skip: set[int]  # ids of nodes already folded into another op
    fused: dict[int, Callable[[], None]]  # id of a pattern's last node -> emits the whole pattern

    def __init__(self, model: onnx.ModelProto):
        self.b = ModelBuilder("edgepack ONNX→TFLite")
        self.onnx = model
        self.values = {}
        self.consumers = {}
        self.graph_outputs = {o.name for o in model.graph.output}
        self.skip = set()
        self.fused = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        shapes = {}
        for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
            tt = vi.type.tensor_type
            if tt.HasField("shape") and tt.elem_type:
                shapes[vi.name] = (tuple(d.dim_value for d in tt.shape.dim),
                                   onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        self.shapes = shapes
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            self.values[init.name] = Value(arr.shape, arr.dtype, identity(arr.ndim), const=arr)

    # lookup ----------------------------------------------------------------------------
    def value(self, name: str) -> Value:
        if name not in self.values:
            raise UnsupportedOperatorError(
                f"value '{name}' is used before it is produced (graph not topologically sorted?)")
        return self.values[name]

    def const(self, name: str, node=None) -> np.ndarray | None:
        v = self.values.get(name)
        return None if v is None else v.const

    def require_const(self, name: str, node, what: str) -> np.ndarray:
        c = self.const(name)
        if c is None:
            raise UnsupportedOperatorError(f"node '{node.name}' ({node.op_type}): {what} must be a constant")
        return c

    def get(self, name: str, perm=None) -> int:
        """TFLite tensor index of `name` laid out as onnx_value.transpose(perm)."""
        v = self.value(name)
        perm = tuple(perm) if perm is not None else (v.perm if v.index is not None else identity(v.rank))
        if perm in v.cache:
            return v.cache[perm]
        if self._via_source(v, perm) is not None:
            v.cache[perm] = self._via_source(v, perm)
            return v.cache[perm]
        if v.const is not None:
            data = np.ascontiguousarray(v.const.transpose(perm)) if v.rank else v.const
            idx = self.b.const(name, tfl_array(data))
        else:
            idx = self.relayout(v.index, tuple(v.shape[p] for p in v.perm), relative(v.perm, perm), name)
        v.cache[perm] = idx
        return idx

    @staticmethod
    def _via_source(v: Value, perm) -> int | None:
        if v.source is None:
            return None
        src, q = v.source
        return src.cache.get(tuple(q[p] for p in perm))

    def available(self, name: str, perm) -> bool:
        """Whether `name` already exists in layout `perm` (no op needed to get it)."""
        v = self.value(name)
        return tuple(perm) in v.cache or self._via_source(v, tuple(perm)) is not None

    def relayout(self, index: int, tshape, rel, name: str) -> int:
        """Emit the cheapest op turning a tensor of shape `tshape` into tensor.transpose(rel)."""
        out_shape = tuple(tshape[r] for r in rel)
        if rel == identity(len(rel)):
            return index
        out = self.b.tensor(f"{name}_perm", out_shape, self._np_dtype(index))
        if moves_only_unit_axes(tshape, rel):
            self.reshape_to(index, out, out_shape)
        else:
            self.b.op(BOP.TRANSPOSE, [index, self.b.const(f"{name}_perm_axes", np.asarray(rel, np.int32))], [out],
                      *options("TransposeOptions"))
        return out

    def reshape_to(self, src: int, dst: int, shape) -> None:
        opts, kind = options("ReshapeOptions", newShape=[int(d) for d in shape])
        self.b.op(BOP.RESHAPE, [src, self.b.const("shape", np.asarray(shape, np.int32))], [dst], opts, kind)

    def _np_dtype(self, index: int):
        t = self.b.dtype_of(index)
        return {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT32: np.int32,
                schema.TensorType.INT64: np.int64, schema.TensorType.BOOL: np.bool_}.get(t, np.float32)

    def dtype(self, name: str) -> np.dtype:
        """The TFLite element type of ONNX value `name` (see `tfl_dtype`)."""
        v = self.value(name)
        return tfl_dtype(v.dtype)

    def perm_of(self, name: str) -> tuple[int, ...]:
        v = self.value(name)
        return v.perm if v.index is not None else identity(v.rank)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.value(name).shape

    # results ---------------------------------------------------------------------------
    def output(self, name: str, shape, perm=None, dtype=None) -> int:
        """Create the TFLite tensor for ONNX value `name` (shape in ONNX layout) in `perm`;
        its element type is `dtype`, else the inferred ONNX type's (`tfl_dtype`)."""
        perm = tuple(perm) if perm is not None else identity(len(shape))
        if dtype is None:
            dtype = tfl_dtype(self.shapes[name][1]) if name in self.shapes else np.float32
        idx = self.b.tensor(name, tuple(shape[p] for p in perm), dtype)
        self.values[name] = Value(tuple(shape), np.dtype(dtype), perm, idx, cache={perm: idx})
        return idx

    def alias(self, name: str, source: str) -> None:
        """`name` is the same value as `source` (Identity, Dropout at inference)."""
        self.values[name] = self.values[source]

    def bind_const(self, name: str, array: np.ndarray) -> None:
        self.values[name] = Value(array.shape, array.dtype, identity(array.ndim), const=array)

    def onnx_shape(self, name: str) -> tuple[int, ...]:
        if name in self.values:
            return self.values[name].shape
        return self.shapes[name][0]

    def sole_consumer(self, name: str):
        users = self.consumers.get(name, [])
        if len(users) == 1 and name not in self.graph_outputs:
            return users[0]
        return None
