"""Speed rewrites of the cleaned float graph, and why an int8 graph runs slower than float.

`speed_rewrites` replaces idioms that runtimes execute as several small elementwise
kernels (and that quantisers leave as float islands between Q/DQ pairs) with the one
operator each runtime has a fused or int8 kernel for. Every rewrite is exact up to
float rounding; each returns the rewritten model and what it changed, in words.

- hard-swish (``hard_swish``; by default left as written, a Div by 6 becoming a Mul):
  ``"int8"`` writes ``HardSwish`` as ``x * Clip(x + 3, 0, 6) * (1/6)`` and ``HardSigmoid`` as
  ``Clip(a * x + b, 0, 1)`` (ONNX Runtime's CPU provider has no HardSwish kernel, it expands
  it into HardSigmoid and Mul, and has no int8 HardSigmoid; Add, Mul and a folded Clip are
  int8 kernels); ``"fuse"`` makes one ``HardSwish`` of ``x * Clip(x + 3, 0, 6) / 6`` or
  ``x * HardSigmoid(x, 1/6, 0.5)`` (opset 14; an opset-13 graph moves to 14, whose changes
  are types and defaults only). Measured (scripts/bench_speed.py): neither wins everywhere.
  "fuse" makes LiteRT's int8 model slower (its int8 HARD_SWISH: 3.6x the four int8 ops on
  PP-OCR's direction classifier); "int8" made a MobileNetV3's float and int8 models slower.
- ``ReduceMean`` over H, W of a 4-D tensor → ``GlobalAveragePool`` (+ ``Flatten`` when
  keepdims=0): ONNX Runtime has an int8 GlobalAveragePool (QLinearGlobalAveragePool)
  and an NCHWc one, and no int8 ReduceMean.
- ``Div`` by a constant → ``Mul`` by its reciprocal: neither ONNX Runtime nor LiteRT's
  quantiser has an int8 Div (LiteRT leaves it float between QUANTIZE/DEQUANTIZE); both
  have an int8 Mul. (Not bit-exact: within an ulp.)
- ``Max(x, c)`` / ``Min(x, c)`` with a constant scalar → ``Clip`` with that bound: ONNX
  Runtime's quantiser folds a Clip into the preceding Q range (no float island), while
  Max/Min have no int8 kernel there and run in float between DQ and Q.

`int8_slowdown_causes` names, with node names and counts, what keeps an int8 QDQ graph
from running as int8 kernels under ONNX Runtime: the compute nodes left in float after
ONNX Runtime's own QDQ fusion (so the numbers follow the installed runtime, not a list
kept here), the float islands among them, the dequantise/quantise pairs left at run
time, reduce_range, and the idioms `speed_rewrites` would remove from the float graph.
"""

from __future__ import annotations

import collections
import copy
from typing import Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["speed_rewrites", "int8_slowdown_causes"]

_HARD_SWISH_OPSET = 14


class _Graph:
    """Producer/consumer maps and constant lookup over one (top-level) graph."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.producer = {o: n for n in self.g.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        # Subgraphs (If/Loop bodies) may read outer values: count them as consumers too.
        for n in self.g.node:
            for a in n.attribute:
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    for sn in sub.node:
                        for i in sn.input:
                            if i:
                                self.consumers[i].append(n)
        self.outputs = {o.name for o in self.g.output}
        self.inits = {i.name: i for i in self.g.initializer}
        self.removed: set[int] = set()

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant" and id(n) not in self.removed:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
                if a.name == "value_float":
                    return np.asarray(a.f, np.float32)
        return None

    def scalar(self, name: str) -> float | None:
        v = self.const(name)
        if v is None or v.size != 1 or v.dtype.kind != "f":
            return None
        return float(v.reshape(()))

    def only_use(self, value: str, node: onnx.NodeProto) -> bool:
        """`value` is read by `node` alone and is not a graph output."""
        users = self.consumers.get(value, [])
        return value not in self.outputs and len(users) >= 1 and all(u is node for u in users)

    def single_user(self, value: str) -> onnx.NodeProto | None:
        users = self.consumers.get(value, [])
        if value in self.outputs or len(users) != 1:
            return None
        return users[0]

    def opset(self) -> int:
        for o in self.model.opset_import:
            if o.domain in ("", "ai.onnx"):
                return o.version
        return 0


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _other(node: onnx.NodeProto, value: str) -> str | None:
    """The other input of a binary node, if `value` is one of its two inputs."""
    if len(node.input) != 2:
        return None
    if node.input[0] == value:
        return node.input[1]
    if node.input[1] == value:
        return node.input[0]
    return None


def _clip_bounds(G: _Graph, clip: onnx.NodeProto) -> tuple[float | None, float | None] | None:
    if G.opset() < 11:
        return _attr(clip, "min", None), _attr(clip, "max", None)
    lo = hi = None
    if len(clip.input) > 1 and clip.input[1]:
        lo = G.scalar(clip.input[1])
        if lo is None:
            return None
    if len(clip.input) > 2 and clip.input[2]:
        hi = G.scalar(clip.input[2])
        if hi is None:
            return None
    return lo, hi


def _is(v: float | None, target: float, tol: float = 1e-6) -> bool:
    return v is not None and abs(v - target) <= tol * max(1.0, abs(target))


def _divides_by_six(G: _Graph, node: onnx.NodeProto | None, value: str) -> bool:
    """`node` computes value / 6 (Div by 6, or Mul by 1/6)."""
    if node is None:
        return False
    if node.op_type == "Div" and len(node.input) == 2 and node.input[0] == value:
        return _is(G.scalar(node.input[1]), 6.0)
    if node.op_type == "Mul":
        other = _other(node, value)
        return other is not None and _is(G.scalar(other), 1.0 / 6.0)
    return False


def _hard_swish(G: _Graph, new_nodes: dict[int, list[onnx.NodeProto]]) -> list[str]:
    """Find hard-swish idioms; returns the names of the nodes they end in (rewritten in place)."""
    found = []
    for clip in list(G.g.node):
        if id(clip) in G.removed:
            continue
        x = None
        chain: list[onnx.NodeProto] = []
        end = None
        if clip.op_type == "HardSigmoid" and _is(_attr(clip, "alpha", 0.2), 1 / 6, 1e-5) and \
                _is(_attr(clip, "beta", 0.5), 0.5):
            x = clip.input[0]
            mul = G.single_user(clip.output[0])
            if mul is not None and mul.op_type == "Mul" and _other(mul, clip.output[0]) == x:
                chain, end = [clip, mul], mul
        elif clip.op_type == "Clip":
            bounds = _clip_bounds(G, clip)
            add = G.producer.get(clip.input[0])
            if bounds is None or not (_is(bounds[0], 0.0) and _is(bounds[1], 6.0)) or add is None or \
                    add.op_type != "Add" or not G.only_use(add.output[0], clip):
                continue
            for cand in add.input:
                other = _other(add, cand)
                if other is not None and G.const(cand) is None and _is(G.scalar(other), 3.0):
                    x = cand
                    break
            if x is None:
                continue
            nxt = G.single_user(clip.output[0])
            if nxt is None:
                continue
            if _divides_by_six(G, nxt, clip.output[0]):  # x * (clip / 6)
                mul = G.single_user(nxt.output[0])
                if mul is not None and mul.op_type == "Mul" and _other(mul, nxt.output[0]) == x:
                    chain, end = [add, clip, nxt, mul], mul
            elif nxt.op_type == "Mul" and _other(nxt, clip.output[0]) == x:  # (x * clip) / 6
                div = G.single_user(nxt.output[0])
                if _divides_by_six(G, div, nxt.output[0]):
                    chain, end = [add, clip, nxt, div], div
        if end is None:
            continue
        hs = helper.make_node("HardSwish", [x], [end.output[0]], name=f"{end.name or end.output[0]}_hardswish")
        for n in chain:
            G.removed.add(id(n))
        new_nodes[id(end)] = [hs]
        found.append(hs.name)
    return found


def _decompose_hard_swish(G: _Graph, new_nodes: dict[int, list[onnx.NodeProto]]) -> list[str]:
    """HardSwish(x) → x * Clip(x + 3, 0, 6) * (1/6): four ops with int8 kernels (Add, Mul; the
    Clip folds into the quantisation range)."""
    found = []
    consts = {"three": 3.0, "zero": 0.0, "six": 6.0, "sixth": 1.0 / 6.0}
    names = {}
    for n in G.g.node:
        if n.op_type != "HardSwish" or id(n) in G.removed or n.domain not in ("", "ai.onnx"):
            continue
        if not names:
            for key, value in consts.items():
                names[key] = f"edgepack_hard_swish_{key}"
                if names[key] not in G.inits:
                    G.g.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), names[key]))
        x, y, base = n.input[0], n.output[0], n.name or n.output[0]
        G.removed.add(id(n))
        new_nodes[id(n)] = [
            helper.make_node("Add", [x, names["three"]], [f"{base}_plus3"], name=f"{base}_add"),
            helper.make_node("Clip", [f"{base}_plus3", names["zero"], names["six"]], [f"{base}_relu6"],
                             name=f"{base}_clip"),
            helper.make_node("Mul", [x, f"{base}_relu6"], [f"{base}_scaled"], name=f"{base}_mul"),
            helper.make_node("Mul", [f"{base}_scaled", names["sixth"]], [y], name=f"{base}_sixth"),
        ]
        found.append(base)
    return found


def _decompose_hard_sigmoid(G: _Graph, new_nodes: dict[int, list[onnx.NodeProto]]) -> list[str]:
    """HardSigmoid(x; a, b) → Clip(x * a + b, 0, 1): ONNX Runtime has no int8 HardSigmoid, and
    has int8 Mul and Add (the Clip folds into the quantisation range)."""
    found = []
    for n in G.g.node:
        if n.op_type != "HardSigmoid" or id(n) in G.removed or n.domain not in ("", "ai.onnx"):
            continue
        base = n.name or n.output[0]
        alpha, beta = float(_attr(n, "alpha", 0.2)), float(_attr(n, "beta", 0.5))
        for key, value in (("alpha", alpha), ("beta", beta), ("zero", 0.0), ("one", 1.0)):
            G.g.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), f"{base}_{key}"))
        G.removed.add(id(n))
        new_nodes[id(n)] = [
            helper.make_node("Mul", [n.input[0], f"{base}_alpha"], [f"{base}_ax"], name=f"{base}_mul"),
            helper.make_node("Add", [f"{base}_ax", f"{base}_beta"], [f"{base}_axb"], name=f"{base}_add"),
            helper.make_node("Clip", [f"{base}_axb", f"{base}_zero", f"{base}_one"], [n.output[0]],
                             name=f"{base}_clip"),
        ]
        found.append(base)
    return found


def _rank(G: _Graph, shapes: dict[str, int], name: str) -> int | None:
    return shapes.get(name)


def _reduce_mean(G: _Graph, shapes: dict[str, int], new_nodes: dict[int, list[onnx.NodeProto]]) -> list[str]:
    found = []
    for n in G.g.node:
        if n.op_type != "ReduceMean" or id(n) in G.removed or n.domain not in ("", "ai.onnx"):
            continue
        if _rank(G, shapes, n.input[0]) != 4:
            continue
        axes = _attr(n, "axes", None)
        if axes is None and len(n.input) > 1 and n.input[1]:
            c = G.const(n.input[1])
            axes = None if c is None else [int(a) for a in c.ravel()]
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        keep = _attr(n, "keepdims", 1)
        base = n.name or n.output[0]
        if keep:
            repl = [helper.make_node("GlobalAveragePool", [n.input[0]], [n.output[0]], name=f"{base}_gap")]
        else:
            mid = f"{base}_gap_out"
            repl = [helper.make_node("GlobalAveragePool", [n.input[0]], [mid], name=f"{base}_gap"),
                    helper.make_node("Flatten", [mid], [n.output[0]], name=f"{base}_flatten", axis=1)]
        G.removed.add(id(n))
        new_nodes[id(n)] = repl
        found.append(base)
    return found


def _max_min_const(G: _Graph, dtypes: dict[str, int], new_nodes: dict[int, list[onnx.NodeProto]]) -> list[str]:
    found = []
    if G.opset() < 11:
        return found
    for n in G.g.node:
        if n.op_type not in ("Max", "Min") or len(n.input) != 2 or id(n) in G.removed:
            continue
        for x in n.input:
            c = _other(n, x)
            if c is None or G.const(x) is not None:
                continue
            v = G.const(c)
            if v is None or v.size != 1 or v.dtype.kind != "f" or dtypes.get(x) != onnx.TensorProto.FLOAT:
                continue
            bound = f"{n.name or n.output[0]}_bound"
            G.g.initializer.append(numpy_helper.from_array(v.reshape(()).astype(np.float32), bound))
            ins = [x, bound, ""] if n.op_type == "Max" else [x, "", bound]
            while ins and ins[-1] == "":
                ins.pop()
            G.removed.add(id(n))
            new_nodes[id(n)] = [helper.make_node("Clip", ins, [n.output[0]], name=f"{n.name or n.output[0]}_clip")]
            found.append(n.name or n.output[0])
            break
    return found


def _div_const(G: _Graph, dtypes: dict[str, int], new_nodes: dict[int, list[onnx.NodeProto]]) -> list[str]:
    found = []
    for n in G.g.node:
        if n.op_type != "Div" or len(n.input) != 2 or id(n) in G.removed or \
                dtypes.get(n.input[0]) != onnx.TensorProto.FLOAT:
            continue
        v = G.const(n.input[1])
        if v is None or v.dtype != np.float32 or v.size > 4096 or not np.all(np.isfinite(v)) or np.any(v == 0):
            continue
        user = G.single_user(n.output[0])
        if user is not None and user.op_type == "Erf":
            continue  # GELU's x / sqrt(2): ONNX Runtime fuses that pattern (Gelu, BiasGelu) only with the Div
        recip = (1.0 / v.astype(np.float64)).astype(np.float32)
        if not np.all(np.isfinite(recip)):
            continue
        name = f"{n.name or n.output[0]}_reciprocal"
        G.g.initializer.append(numpy_helper.from_array(recip, name))
        G.removed.add(id(n))
        new_nodes[id(n)] = [helper.make_node("Mul", [n.input[0], name], [n.output[0]],
                                             name=f"{n.name or n.output[0]}_mul")]
        found.append(n.name or n.output[0])
    return found


def _infer(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    """Ranks and element types of the graph's values, where shape inference knows them."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - shape inference is a hint here, never a requirement
        inferred = model
    ranks, dtypes = {}, {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.elem_type:
            dtypes[vi.name] = t.elem_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
    for i in g.initializer:
        ranks[i.name] = len(i.dims)
        dtypes[i.name] = i.data_type
    return ranks, dtypes


def _prune_constants(G: _Graph) -> None:
    """Drop Constant nodes and initializers nothing reads any more."""
    used = {i for n in G.g.node for i in n.input} | G.outputs
    for n in G.g.node:
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                used |= {i for sn in sub.node for i in sn.input}
    keep = [n for n in G.g.node if not (n.op_type == "Constant" and not any(o in used for o in n.output))]
    if len(keep) != len(G.g.node):
        del G.g.node[:]
        G.g.node.extend(keep)
    inits = [i for i in G.g.initializer if i.name in used]
    if len(inits) != len(G.g.initializer):
        del G.g.initializer[:]
        G.g.initializer.extend(inits)


def speed_rewrites(model: onnx.ModelProto, *,
                   hard_swish: Literal["keep", "int8", "fuse"] = "keep") -> tuple[onnx.ModelProto, list[str]]:
    """Rewrite slow idioms of a float graph; returns (new model, what changed, one line each).

    The input model is not modified. Numerically equivalent up to float rounding.
    `hard_swish`: "keep" (default) leaves hard-swish as written (a written-out Div by 6 still
    becomes a Mul); "int8" writes HardSwish and HardSigmoid as Add/Mul/Clip, ops with int8
    kernels; "fuse" makes one HardSwish of each written-out hard-swish (see the module
    docstring for what each measured).
    """
    model = copy.deepcopy(model)
    changes: list[str] = []
    ranks, dtypes = _infer(model)

    def apply(rewrite, *args) -> list[str]:
        G = _Graph(model)
        new_nodes: dict[int, list[onnx.NodeProto]] = {}
        found = rewrite(G, *args, new_nodes)
        if found:
            nodes = []
            for n in G.g.node:
                if id(n) in new_nodes:
                    nodes.extend(new_nodes[id(n)])
                elif id(n) not in G.removed:
                    nodes.append(n)
            del G.g.node[:]
            G.g.node.extend(nodes)
            _prune_constants(G)
        return found

    opset = _Graph(model).opset()
    if hard_swish == "int8":
        found = apply(_decompose_hard_swish)
        if found:
            changes.append(f"HardSwish -> Add, Clip, Mul, Mul by 1/6 (int8 kernels in ONNX Runtime and LiteRT): "
                           f"{len(found)} ({_names(found)})")
    if hard_swish == "int8" and opset >= 11:
        found = apply(_decompose_hard_sigmoid)
        if found:
            changes.append(f"HardSigmoid -> Mul, Add, Clip (int8 kernels in ONNX Runtime): "
                           f"{len(found)} ({_names(found)})")
    if opset >= 13 and hard_swish == "fuse":
        found = apply(_hard_swish)
        if found:
            if opset < _HARD_SWISH_OPSET:
                for o in model.opset_import:
                    if o.domain in ("", "ai.onnx"):
                        o.version = _HARD_SWISH_OPSET
                changes.append(f"opset {opset} -> {_HARD_SWISH_OPSET} for HardSwish (types and defaults only differ)")
            changes.append(f"hard-swish written out (x*Clip(x+3,0,6)/6 or x*HardSigmoid(x)) -> HardSwish: "
                           f"{len(found)} ({_names(found)})")
    found = apply(_reduce_mean, ranks)
    if found:
        changes.append(f"ReduceMean over H,W -> GlobalAveragePool: {len(found)} ({_names(found)})")
    found = apply(_max_min_const, dtypes)
    if found:
        changes.append(f"Max/Min with a constant -> Clip: {len(found)} ({_names(found)})")
    found = apply(_div_const, dtypes)
    if found:
        changes.append(f"Div by a constant -> Mul by its reciprocal: {len(found)} ({_names(found)})")
    if changes:
        # Keep the cleaned graph's invariant: every value typed and shaped (the quantiser's
        # calibration measures the float values value_info names).
        live = {t for n in model.graph.node for t in list(n.input) + list(n.output)}
        kept = [vi for vi in model.graph.value_info if vi.name in live]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        except Exception:  # noqa: BLE001 - a graph shape inference cannot follow keeps what it had
            pass
        onnx.checker.check_model(model)
    return model, changes


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … {len(names) - limit} more" if len(names) > limit else "")


# Ops that carry no arithmetic worth an int8 kernel (shape plumbing, Q/DQ themselves).
_NON_COMPUTE = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Reshape", "Flatten", "Squeeze",
                "Unsqueeze", "Transpose", "Shape", "Gather", "Slice", "Concat", "Split", "Identity", "Constant",
                "Cast", "ConstantOfShape", "Expand", "Range", "Size"}


def _load(m) -> onnx.ModelProto:
    return m if isinstance(m, onnx.ModelProto) else onnx.load(str(m))


def _ort_fused(qdq: onnx.ModelProto, int8_allowed: bool) -> onnx.ModelProto:
    """The QDQ graph after ONNX Runtime's own level-2 fusion (what its kernels will run)."""
    from .graph import ort_optimized

    return ort_optimized(qdq, "extended", {"session.qdqisint8allowed": "1" if int8_allowed else "0"})


def int8_slowdown_causes(float_onnx, qdq_onnx, *, target_platform: str = "amd64") -> list[str]:
    """Why an int8 QDQ graph may run slower than its float graph under ONNX Runtime; one finding a line.

    `float_onnx`, `qdq_onnx`: paths or ModelProtos. `target_platform` ("amd64" or "arm")
    sets whether ONNX Runtime may fuse signed-int8 activations, as the .ort converter does.
    """
    float_model, qdq = _load(float_onnx), _load(qdq_onnx)
    findings: list[str] = []

    fused = _ort_fused(qdq, target_platform == "arm")
    G = _Graph(fused)
    float_ops: dict[str, list[str]] = collections.defaultdict(list)
    islands: dict[str, list[str]] = collections.defaultdict(list)
    int8_nodes = 0
    for n in G.g.node:
        if n.op_type in _NON_COMPUTE:
            continue
        if n.domain == "com.microsoft" and (n.op_type.startswith("QLinear") or n.op_type in (
                "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention")):
            int8_nodes += 1
            continue
        if n.op_type in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"):
            int8_nodes += 1
            continue
        name = n.name or n.output[0]
        float_ops[n.op_type].append(name)
        fed_by_dq = any(G.producer.get(i) is not None and G.producer[i].op_type == "DequantizeLinear"
                        for i in n.input if i and i not in G.inits)
        feeds_q = any(u.op_type == "QuantizeLinear" for o in n.output for u in G.consumers.get(o, []))
        if fed_by_dq or feeds_q:
            islands[n.op_type].append(name)
    n_float = sum(len(v) for v in float_ops.values())
    if n_float:
        counts = ", ".join(f"{op} {len(v)}" for op, v in sorted(float_ops.items(), key=lambda kv: -len(kv[1])))
        findings.append(f"{n_float} compute node(s) still run in float after ONNX Runtime's QDQ fusion "
                        f"({int8_nodes} run as int8 kernels): {counts}")
    for op, names in sorted(islands.items(), key=lambda kv: -len(kv[1])):
        findings.append(f"float island between DequantizeLinear and QuantizeLinear: {op} x{len(names)} "
                        f"(ONNX Runtime has no int8 kernel for it here; each costs a dequantise and a "
                        f"requantise): {_names(names)}")
    dq_act = [n for n in G.g.node if n.op_type == "DequantizeLinear" and n.input[0] not in G.inits]
    q_act = [n for n in G.g.node if n.op_type == "QuantizeLinear"]
    if dq_act or q_act:
        findings.append(f"{len(q_act)} QuantizeLinear and {len(dq_act)} activation DequantizeLinear node(s) "
                        f"remain at run time (conversions between int8 and float)")

    weights = [numpy_helper.to_array(i) for i in qdq.graph.initializer
               if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and np.prod(i.dims) > 16]
    if weights:
        # 7-bit weights: onnxruntime's reduce_range keeps int8 in [-64, 64], uint8 in [0, 127].
        if all(int(np.abs(w.astype(np.int32)).max()) <= 64 if w.dtype == np.int8 else int(w.max()) <= 127
               for w in weights):
            findings.append("reduce_range: weights use 7 bits (an accuracy remedy for x86 without VNNI; "
                            "the same int8 kernels run, so it is not a speed cause by itself)")

    _, would = speed_rewrites(float_model)
    for change in would:
        if not change.startswith("opset"):
            findings.append(f"float graph idiom with a faster form (speed_rewrites would do it): {change}")
    if not findings:
        findings.append("no cause found: every compute node runs as an int8 kernel")
    return findings
