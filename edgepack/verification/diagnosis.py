"""Per-node quantisation diagnosis: which quantised nodes add how much error, and from what.

Host side (numpy, onnx, onnxruntime; no torch). Inputs: the cleaned float ONNX graph, the
QDQ int8 graph made from it (ONNX Runtime's quantiser, QDQ format: compute nodes keep their
float-graph names) and calibration model calls.

Definitions, per quantised node N (a top-level compute node of the QDQ graph with at least
one input produced by a DequantizeLinear; Q/DQ/Constant are not compute nodes):

- *local error*: N alone, as a one-node ONNX model (same op, attributes and opsets), is run
  on the float graph's actual input tensors for N (captured from one run of the float graph
  with every needed intermediate exposed as an output). The reference run uses float
  weights and float inputs. The quantised runs apply N's own quantisation as the QDQ graph
  does: a weight (a DequantizeLinear of a constant, int32 biases included) becomes the QDQ
  graph's dequantised integer weight; an activation input fed by a Q->DQ pair is fake-quantised with that
  pair's scale / zero point (round-half-even(x / s) + zp, saturated to the integer type,
  then dequantised); N's first output goes through N's output Q->DQ if it has one.
  `sqnr_db`: weights and activations quantised; `weights_sqnr_db`: weights only (None when
  N has no quantised weight); `activations_sqnr_db`: inputs and output only (None when N
  has no quantised activation).
- *cumulative error* (`cumulative_sqnr_db`): N's first output as the rest of the QDQ graph
  sees it (after N's output Q->DQ if there is one) in a run of the whole QDQ graph with
  ONNX Runtime's optimisations off (reference Q/DQ math, no fused int8 kernels), against
  the float graph's same tensor. It shows where error accumulates. (If the QDQ graph cannot
  run, the column is None and `cumulative_error` says why.)

ONNX Runtime's quantiser folds an activation that alone follows a node (Conv -> Relu) into
that node's output quantisation; such a node is measured together with the folded float
activation, on the activation's output (the tensor its output Q/DQ stands for).

SQNR = 10 log10(sum ref^2 / sum (ref - q)^2) over all diagnosed calls together, in dB;
+inf when the quantised result is exact (`edgepack.manifest.jsonio` writes it as "inf"),
-inf when the reference is all zeros but the quantised result is not. Nodes with several
outputs are measured on their first output. Nodes inside If/Loop/Scan subgraphs, control
flow nodes themselves and nodes a one-node model cannot run are skipped; the result counts
them by reason (`skipped`). The diagnosis never raises: a failure of the whole measurement
is returned as `error`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

Progress = Callable[[int, int], None]

METHOD = (
    "Per quantised node (a compute node of the QDQ graph with a DequantizeLinear input), SQNR in dB over "
    "the diagnosed calibration calls of the node run alone on the float graph's own input tensors, quantised "
    "(weights dequantised from the QDQ graph's integers; activation inputs and the output fake-quantised with "
    "the QDQ graph's scale and zero point) against unquantised: sqnr_db both, weights_sqnr_db weights only, "
    "activations_sqnr_db inputs and output only (None where the node has none of that kind); "
    "cumulative_sqnr_db is the node's output (after its output Q/DQ) in the whole QDQ graph run with "
    "optimisations off against the float graph; first output only for multi-output nodes; inf = exact."
)

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_CONTROL_FLOW = ("If", "Loop", "Scan")
# Integer ranges by ONNX TensorProto element type: INT8, UINT8, INT16, UINT16, INT32, UINT4, INT4.
_INT_RANGES = {3: (-128, 127), 2: (0, 255), 5: (-32768, 32767), 4: (0, 65535),
               6: (-(2**31), 2**31 - 1), 21: (0, 15), 22: (-8, 7)}


@dataclass
class _Quant:
    """One quantise -> dequantise step: parameters broadcastable against the tensor."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    lo: int
    hi: int

    def _shape(self, a: np.ndarray, ndim: int) -> np.ndarray:
        if a.ndim == 0 or a.size == 1:
            return a.reshape(())
        shape = [1] * ndim
        shape[self.axis % ndim] = a.size
        return a.reshape(shape)

    def fake(self, x: np.ndarray) -> np.ndarray:
        s = self._shape(self.scale, x.ndim).astype(np.float32)
        zp = self._shape(self.zero_point, x.ndim).astype(np.float32)
        q = np.clip(np.round(x.astype(np.float32) / s) + zp, self.lo, self.hi)
        return np.asarray((q - zp) * s).astype(x.dtype)

    def dequantize(self, q: np.ndarray, dtype) -> np.ndarray:
        s = self._shape(self.scale, q.ndim).astype(np.float32)
        zp = self._shape(self.zero_point, q.ndim).astype(np.float32)
        return np.asarray((q.astype(np.float32) - zp) * s).astype(dtype)


@dataclass
class _Node:
    """A diagnosed node: its float twin and how the QDQ graph quantises it."""

    name: str
    op: str
    float_node: object  # onnx.NodeProto
    output: str  # float graph name of the measured (first) output
    qdq_output: str  # the QDQ graph's tensor downstream nodes read for that output
    chain: list = field(default_factory=list)  # float nodes the QDQ graph folded into N's output (Relu, Clip)
    reads: list[str] = field(default_factory=list)  # tensors N (with its chain) reads from outside
    weights: dict[int, np.ndarray] = field(default_factory=dict)  # input index -> dequantised weight
    activations: dict[int, _Quant] = field(default_factory=dict)  # input index -> fake quantisation
    out_quant: _Quant | None = None
    session: object = None
    sums: dict[str, list[float]] = field(default_factory=dict)  # variant -> [signal, noise]

    def add(self, variant: str, ref: "_Ref", test: np.ndarray) -> None:
        acc = self.sums.setdefault(variant, [0.0, 0.0])
        acc[0] += ref.signal
        acc[1] += ref.noise(test)


class _Ref:
    """A reference tensor with its energy. Positions where the reference is not finite (an
    attention mask's -inf) carry no signal, and no error where the test equals them."""

    def __init__(self, ref: np.ndarray):
        r = np.asarray(ref)
        if not np.issubdtype(r.dtype, np.floating):
            r = r.astype(np.float64)
        self.finite = bool(np.all(np.isfinite(r)))
        self.raw = r
        self.r = r if self.finite else np.where(np.isfinite(r), r, 0).astype(r.dtype)
        self.signal = _energy(self.r)

    def noise(self, test: np.ndarray) -> float:
        t = np.asarray(test)
        if t.shape != self.r.shape:
            raise _Skip("output shape differs")
        with np.errstate(invalid="ignore", over="ignore"):
            if self.finite and np.all(np.isfinite(t)):
                return _energy(self.r - t.astype(self.r.dtype, copy=False))
            e = np.where(self.raw == t, 0.0, self.raw.astype(np.float64) - t.astype(np.float64))
        v = _energy(e)
        return v if math.isfinite(v) else math.inf


def _energy(x: np.ndarray) -> float:
    """sum(x^2): a float32 dot product where it cannot overflow, float64 otherwise."""
    flat = np.ascontiguousarray(x).ravel()
    if flat.dtype == np.float32:
        v = float(np.dot(flat, flat))
        if math.isfinite(v):
            return v
    flat = flat.astype(np.float64)
    return float(np.dot(flat, flat))


def diagnose(float_onnx: Path, qdq_onnx: Path, calls: dict[str, np.ndarray], *, max_calls: int = 8,
             time_budget_s: float | None = None, progress: Progress | None = None) -> dict:
    """Per-node quantisation error of `qdq_onnx` against `float_onnx` on the first `max_calls`
    calibration calls (fewer if `time_budget_s` runs out; at least one).

    Returns a JSON-ready dict (non-finite SQNRs as Python floats, which
    `edgepack.manifest.jsonio` writes as strings): `method`, `calls` (calls measured),
    `nodes` ranked worst `sqnr_db` first, `skipped` (reason -> count), `seconds`.
    `progress(done, total)` is called after each call. Never raises: on a failure of the
    whole measurement, `error` says why and `nodes` is empty."""
    started = time.perf_counter()
    try:
        n = min(int(max_calls), int(len(next(iter(calls.values()))))) if calls else 0
        result = _diagnose(Path(float_onnx), Path(qdq_onnx), calls, n, progress,
                           None if time_budget_s is None else started + float(time_budget_s))
    except Exception as exc:  # the build calls this on arbitrary models; a diagnosis must not fail it
        result = {"method": METHOD, "calls": 0, "nodes": [], "skipped": {},
                  "error": f"{type(exc).__name__}: {_first_line(exc)}"}
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def top_nodes(diagnosis: dict, k: int) -> list[str]:
    """Names of the `k` most damaging nodes: lowest local `sqnr_db` first (-inf included);
    nodes measured as exact (+inf) or not measured (None) are never named."""
    ranked = [d for d in diagnosis.get("nodes", []) if _damaging(d.get("sqnr_db"))]
    ranked.sort(key=lambda d: float(d["sqnr_db"]))
    return [d["name"] for d in ranked[:max(0, int(k))]]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _damaging(v) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v) and v != math.inf


def _sqnr(acc: list[float] | None) -> float | None:
    if acc is None:
        return None
    signal, noise = acc
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10.0 * math.log10(signal / noise))


def _rank_key(d: dict):
    v = d["sqnr_db"]
    return (0 if v is not None and not math.isnan(v) else 1, v if v is not None and not math.isnan(v) else 0.0)


# ---------------------------------------------------------------------------------------
# Reading the graphs


def _constants(graph) -> dict[str, np.ndarray]:
    """Initializers and Constant node values of a graph, by tensor name."""
    from onnx import helper, numpy_helper

    values: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        try:
            values[init.name] = numpy_helper.to_array(init)
        except Exception:
            pass
    for node in graph.node:
        if node.op_type != "Constant" or not node.output:
            continue
        for a in node.attribute:
            try:
                v = helper.get_attribute_value(a)
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(v)
                elif a.name in ("value_float", "value_int"):
                    values[node.output[0]] = np.array(v, np.float32 if a.name == "value_float" else np.int64)
                elif a.name in ("value_floats", "value_ints"):
                    values[node.output[0]] = np.array(v, np.float32 if a.name == "value_floats" else np.int64)
            except Exception:
                pass
    return values


def _quant_params(node, values: dict[str, np.ndarray], elem_types: dict[str, int]) -> _Quant:
    """The scale / zero point / integer range of a QuantizeLinear or DequantizeLinear node."""
    attrs = {a.name: a for a in node.attribute}
    if "block_size" in attrs and attrs["block_size"].i:
        raise _Skip("blocked quantisation")
    scale = values.get(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        raise _Skip("scale is not a constant")
    zp_name = node.input[2] if len(node.input) > 2 else ""
    zp = values.get(zp_name) if zp_name else None
    if zp_name and zp is None:
        raise _Skip("zero point is not a constant")
    elem = elem_types.get(zp_name) if zp_name else None
    if elem is None and zp is not None:  # a Constant node's zero point: its numpy dtype says the type
        kind = np.asarray(zp).dtype
        elem = {np.dtype(np.int8): 3, np.dtype(np.uint8): 2, np.dtype(np.int16): 5, np.dtype(np.uint16): 4,
                np.dtype(np.int32): 6}.get(kind, -1)
    if elem is None:
        out_dtype = attrs["output_dtype"].i if "output_dtype" in attrs else 0
        elem = out_dtype or 2  # no zero point: uint8 unless output_dtype says otherwise
    if elem not in _INT_RANGES:
        raise _Skip("unsupported quantised type")
    lo, hi = _INT_RANGES[elem]
    axis = attrs["axis"].i if "axis" in attrs else 1
    zp_arr = np.zeros_like(scale, dtype=np.float32) if zp is None else np.asarray(zp).astype(np.float32)
    return _Quant(np.asarray(scale, np.float32), zp_arr, axis, lo, hi)


class _Skip(Exception):
    """A node that cannot be diagnosed; the message is the reason counted in the result."""


def _elem_types(graph) -> dict[str, int]:
    return {i.name: i.data_type for i in graph.initializer}


def _subgraph_nodes(graph):
    """Nodes inside control-flow subgraphs (any depth)."""
    from onnx import AttributeProto

    for node in graph.node:
        for a in node.attribute:
            subs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)
            for sub in subs:
                yield from sub.node
                yield from _subgraph_nodes(sub)


def _plan(fmodel, qmodel, skipped: Counter) -> list[_Node]:
    """The quantised nodes of the QDQ graph, each with its quantisation read from that graph."""
    fgraph, qgraph = fmodel.graph, qmodel.graph
    qvalues = _constants(qgraph)
    qtypes = _elem_types(qgraph)
    qproducer = {o: n for n in qgraph.node for o in n.output if o}
    qconsumers: dict[str, list] = {}
    for n in qgraph.node:
        for i in n.input:
            qconsumers.setdefault(i, []).append(n)
    fby_name = {n.name: n for n in fgraph.node if n.name}
    fby_output = {n.output[0]: n for n in fgraph.node if n.output and n.output[0]}
    fconsumers: dict[str, list] = {}
    for n in fgraph.node:
        for i in n.input:
            fconsumers.setdefault(i, []).append(n)

    def is_dq(t: str) -> bool:
        p = qproducer.get(t)
        return p is not None and p.op_type == "DequantizeLinear"

    inner = list(_subgraph_nodes(qgraph))
    inner_dq = {o for n in inner if n.op_type == "DequantizeLinear" for o in n.output}
    for node in inner:
        if node.op_type not in _QDQ + ("Constant",) and any(is_dq(i) or i in inner_dq for i in node.input):
            skipped["inside a control-flow subgraph"] += 1
    plan: list[_Node] = []
    for qnode in qgraph.node:
        if qnode.op_type in _QDQ + ("Constant",) or not any(is_dq(i) for i in qnode.input):
            continue
        try:
            if qnode.op_type in _CONTROL_FLOW:
                raise _Skip("control-flow node")
            fnode = fby_name.get(qnode.name) if qnode.name else None
            if fnode is None:
                fnode = fby_output.get(qnode.output[0]) if qnode.output else None
            if fnode is None:
                raise _Skip("not found in the float graph")
            if fnode.op_type != qnode.op_type or len(fnode.input) != len(qnode.input) or not fnode.output \
                    or not fnode.output[0]:
                raise _Skip("differs from the float graph")
            d = _read_node(qnode, fnode, qvalues, qtypes, qproducer, qconsumers)
            # a graph output keeps its name on the DQ after N; N's own output is renamed
            target = fnode.output[0] if d.qdq_output == fnode.output[0] else qnode.output[0]
            d.chain, d.output = _folded(fnode, target, fconsumers)
            d.reads = _external_inputs(d)
            plan.append(d)
        except _Skip as why:
            skipped[str(why)] += 1
    return plan


def _folded(fnode, target: str, fconsumers: dict) -> tuple[list, str]:
    """The float nodes between `fnode`'s first output and `target`, the QDQ node's first output.

    ONNX Runtime's QDQ quantiser removes an activation (Relu, Clip) that alone consumes a
    quantised node's output and gives that node the activation's output and range; the float
    twin of such a node is the node followed by the activation."""
    chain, t = [], fnode.output[0]
    while t != target:
        users = fconsumers.get(t, [])
        if len(users) != 1 or len(chain) >= 3 or not users[0].output:
            raise _Skip("output differs from the float graph")
        chain.append(users[0])
        t = users[0].output[0]
    return chain, t


def _read_node(qnode, fnode, qvalues, qtypes, qproducer, qconsumers) -> _Node:
    d = _Node(name=qnode.name or fnode.name or fnode.output[0], op=qnode.op_type, float_node=fnode,
              output=fnode.output[0], qdq_output=qnode.output[0])
    for i, t in enumerate(qnode.input):
        dq = qproducer.get(t) if t else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        source = dq.input[0]
        dq_params = _quant_params(dq, qvalues, qtypes)
        if source in qvalues:  # a weight (initializer or Constant): the QDQ graph's integers, dequantised
            d.weights[i] = dq_params.dequantize(np.asarray(qvalues[source]), np.float32)
            continue
        q = qproducer.get(source)
        if q is not None and q.op_type == "QuantizeLinear":
            qp = _quant_params(q, qvalues, qtypes)
            # quantise with the Q's parameters, dequantise with the DQ's (the same in ORT's graphs)
            d.activations[i] = _Quant(qp.scale, qp.zero_point, qp.axis, qp.lo, qp.hi) \
                if _same(qp, dq_params) else _Pair(qp, dq_params)
        else:
            d.activations[i] = dq_params
    for c in qconsumers.get(qnode.output[0], []):
        if c.op_type == "QuantizeLinear":
            d.out_quant = _quant_params(c, qvalues, qtypes)
            dqs = [x for x in qconsumers.get(c.output[0], []) if x.op_type == "DequantizeLinear"]
            if dqs:
                dq_params = _quant_params(dqs[0], qvalues, qtypes)
                if not _same(d.out_quant, dq_params):
                    d.out_quant = _Pair(d.out_quant, dq_params)
                d.qdq_output = dqs[0].output[0]
            break
    return d


def _same(a: _Quant, b: _Quant) -> bool:
    return (a.lo, a.hi) == (b.lo, b.hi) and a.scale.shape == b.scale.shape and np.array_equal(a.scale, b.scale) \
        and np.array_equal(a.zero_point, b.zero_point)


class _Pair(_Quant):
    """Quantise with one node's parameters, dequantise with another's."""

    def __init__(self, q: _Quant, dq: _Quant):
        super().__init__(q.scale, q.zero_point, q.axis, q.lo, q.hi)
        self.dq = dq

    def fake(self, x: np.ndarray) -> np.ndarray:
        s = self._shape(self.scale, x.ndim).astype(np.float32)
        zp = self._shape(self.zero_point, x.ndim).astype(np.float32)
        q = np.clip(np.round(x.astype(np.float32) / s) + zp, self.lo, self.hi)
        return self.dq.dequantize(np.asarray(q), x.dtype)


# ---------------------------------------------------------------------------------------
# Running


def _session(model_bytes: bytes, disable_all: bool, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    else:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shares the CPU with the build
    if disable_all:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _exposing(model, names: list[str]) -> bytes:
    """The model with `names` added as (typeless) graph outputs, serialised."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    return m.SerializeToString()


def _external_inputs(d: _Node) -> list[str]:
    """Tensors the node (and its folded activation) read from outside, in order."""
    made: set[str] = set()
    names: dict[str, None] = {}
    for node in [d.float_node, *d.chain]:
        for t in node.input:
            if t and t not in made:
                names[t] = None
        made.update(o for o in node.output if o)
    return list(names)


def _one_node_model(fmodel, d: _Node, inputs: dict[str, np.ndarray]) -> bytes:
    """The node alone (with its folded activation, if any), its inputs typed from the arrays
    it is fed, its measured output as the only graph output."""
    import onnx
    from onnx import helper

    nodes = []
    for n in [d.float_node, *d.chain]:
        node = onnx.NodeProto()
        node.CopyFrom(n)
        nodes.append(node)
    graph_inputs = []
    for name, a in inputs.items():
        elem = helper.np_dtype_to_tensor_dtype(a.dtype)
        graph_inputs.append(helper.make_tensor_value_info(name, elem, list(a.shape)))
    outputs = [onnx.ValueInfoProto(name=d.output)]
    graph = helper.make_graph(nodes, "edgepack_diagnosis_node", graph_inputs, outputs)
    model = helper.make_model(graph, opset_imports=list(fmodel.opset_import))
    model.ir_version = fmodel.ir_version
    for f in fmodel.functions:  # a local function the node may call
        model.functions.append(f)
    return model.SerializeToString()


def _float_graph_inputs(model) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _diagnose(float_path: Path, qdq_path: Path, calls: dict[str, np.ndarray], n: int,
              progress: Progress | None, deadline: float | None) -> dict:
    import onnx

    fmodel = onnx.load(str(float_path))
    qmodel = onnx.load(str(qdq_path))
    skipped: Counter = Counter()
    plan = _plan(fmodel, qmodel, skipped)
    fvalues = _constants(fmodel.graph)
    f_inputs = _float_graph_inputs(fmodel)
    q_inputs = _float_graph_inputs(qmodel)

    # Everything the one-node models need that is neither a constant nor a graph input.
    wanted: dict[str, None] = {}
    for d in plan:
        for t in [*d.reads, d.output]:
            if t not in fvalues and t not in f_inputs:
                wanted[t] = None
    fsession = _session(_exposing(fmodel, list(wanted)), disable_all=False)
    f_out_names = [o.name for o in fsession.get_outputs()]
    try:  # the cumulative column only; local numbers do not need the QDQ graph to run
        qsession = _session(_exposing(qmodel, [d.qdq_output for d in plan]), disable_all=True)
        q_out_names = [o.name for o in qsession.get_outputs()]
    except Exception as exc:
        qsession, cumulative_error = None, f"{type(exc).__name__}: {_first_line(exc)}"
    else:
        cumulative_error = None

    broken: dict[int, str] = {}  # plan index -> reason the node was dropped during the runs
    done = 0
    for k in range(n):
        feed = {name: np.asarray(arr[k]) for name, arr in calls.items()}
        fvals = dict(zip(f_out_names, fsession.run(None, {x: feed[x] for x in f_inputs if x in feed})))
        fvals.update({x: feed[x] for x in f_inputs if x in feed})
        qvals: dict = {}
        if qsession is not None:
            try:
                qvals = dict(zip(q_out_names, qsession.run(None, {x: feed[x] for x in q_inputs if x in feed})))
            except Exception as exc:
                qsession, cumulative_error = None, f"{type(exc).__name__}: {_first_line(exc)}"
        for j, d in enumerate(plan):
            if j in broken:
                continue
            try:
                _measure(d, fmodel, fvalues, fvals, qvals)
            except _Skip as why:
                broken[j] = str(why)
            except Exception as exc:
                broken[j] = f"one-node run failed ({type(exc).__name__})"
        done = k + 1
        if progress:
            progress(done, n)
        if deadline is not None and time.perf_counter() > deadline:
            break

    nodes = []
    for j, d in enumerate(plan):
        if j in broken:
            skipped[broken[j]] += 1
            continue
        nodes.append({
            "name": d.name,
            "op": d.op,
            "output": d.output,
            "sqnr_db": _sqnr(d.sums.get("both")),
            "weights_sqnr_db": _sqnr(d.sums.get("weights")) if d.weights else None,
            "activations_sqnr_db": _sqnr(d.sums.get("activations")) if (d.activations or d.out_quant) else None,
            "cumulative_sqnr_db": _sqnr(d.sums.get("cumulative")) if qsession is not None else None,
        })
    nodes.sort(key=_rank_key)
    result = {"method": METHOD, "calls": done, "nodes": nodes, "skipped": dict(sorted(skipped.items()))}
    if cumulative_error:
        result["cumulative_error"] = cumulative_error
    return result


def _measure(d: _Node, fmodel, fvalues: dict, fvals: dict, qvals: dict) -> None:
    """One call's local and cumulative error of node `d`, added to its sums."""
    fnode = d.float_node
    inputs: dict[str, np.ndarray] = {}
    for t in d.reads:
        v = fvalues.get(t)
        if v is None:
            v = fvals.get(t)
        if v is None:
            raise _Skip("input not available")
        inputs[t] = np.asarray(v)
    ref_out = fvals.get(d.output)
    if ref_out is None or not np.issubdtype(np.asarray(ref_out).dtype, np.floating):
        raise _Skip("non-float output")
    if d.session is None:
        try:
            d.session = _session(_one_node_model(fmodel, d, inputs), disable_all=True, threads=1)
        except Exception as exc:
            raise _Skip(f"one-node model failed ({type(exc).__name__})") from None
    session = d.session

    def run(weights: bool, activations: bool) -> np.ndarray:
        feed = dict(inputs)
        for i, t in enumerate(fnode.input):
            if weights and i in d.weights:
                w = d.weights[i]
                if w.shape != inputs[t].shape:
                    raise _Skip("weight shape differs from the float graph")
                feed[t] = w.astype(inputs[t].dtype)
            if activations and i in d.activations and np.issubdtype(inputs[t].dtype, np.floating):
                feed[t] = d.activations[i].fake(inputs[t])
        out = np.asarray(session.run([d.output], feed)[0])
        if activations and d.out_quant is not None:
            out = d.out_quant.fake(out)
        return out

    ref = _Ref(run(False, False))
    has_act = bool(d.activations) or d.out_quant is not None
    w = a = None
    if d.weights:
        w = run(True, False)
        d.add("weights", ref, w)
    if has_act:
        a = run(False, True)
        d.add("activations", ref, a)
    d.add("both", ref, run(True, True) if d.weights and has_act else a if a is not None else w)
    q = qvals.get(d.qdq_output)
    if q is not None and np.shape(q) == np.shape(ref_out):
        d.add("cumulative", _Ref(ref_out), q)
