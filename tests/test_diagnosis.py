"""Per-node quantisation diagnosis (edgepack.verification.diagnosis) on small hand-built graphs
quantised by edgepack's own quantiser."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.manifest.jsonio import json_safe, restore_floats
from edgepack.stages.data import Dataset
from edgepack.stages.quantize import QuantSettings, quantize_static
from edgepack.verification.diagnosis import diagnose, top_nodes

OPSET = 17


def settings(per_channel: bool) -> QuantSettings:
    return QuantSettings(per_channel=per_channel, activation_type="uint8", weight_type="int8",
                         calibration_method="minmax", percentile=99.99, reduce_range=False,
                         symmetric_activations=False)


def init(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(a), name)


def save(graph: onnx.GraphProto, path: Path) -> Path:
    """Saved with inferred value types, as the pipeline's cleaned float graph carries them."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
    return path


def cnn(path: Path, outlier: float = 0.0) -> Path:
    """x[1,3,8,8] -> Conv c1 -> Relu -> Conv c2 -> Relu -> Flatten -> Gemm -> y[1,5].
    `outlier`: one weight of c2 set to this value, on an input channel that is always zero
    (c1's channel 0 never passes its Relu): it adds nothing to c2's output, but per-tensor
    quantisation then rounds the rest of c2's weights coarsely."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (6, 4, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 4).astype(np.float32)
    if outlier:
        w2[0, 0, 1, 1] = outlier
        b1[0] = -100.0
    wg = rng.normal(0, 0.05, (5, 6 * 8 * 8)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["t1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["t1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["t2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["t2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], name="gemm", transB=1),
    ]
    inits = [init("w1", w1), init("b1", b1), init("w2", w2),
             init("b2", rng.normal(0, 0.1, 6).astype(np.float32)), init("wg", wg),
             init("bg", np.zeros(5, np.float32))]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return save(graph, path)


def attention(path: Path) -> Path:
    """ids[1,8] int64 -> Gather(embedding) -> q, k, v MatMuls -> scaled scores -> Softmax ->
    MatMul -> Reshape (shape from a Constant node) -> Split into two halves (a multi-output
    node) -> Add -> y."""
    rng = np.random.default_rng(1)
    d = 16
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("MatMul", ["e", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["e", "wk"], ["k"], name="k"),
        helper.make_node("MatMul", ["e", "wv"], ["v"], name="v"),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
        helper.make_node("Mul", ["s", "scale"], ["s2"], name="scaled"),
        helper.make_node("Softmax", ["s2"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["c"], name="context"),
        helper.make_node("Constant", [], ["shape"], name="shape_const",
                         value=numpy_helper.from_array(np.array([1, 8, d], np.int64))),
        helper.make_node("Reshape", ["c", "shape"], ["o"], name="reshape"),
        helper.make_node("Split", ["o", "halves"], ["o1", "o2"], name="split", axis=2),
        helper.make_node("Add", ["o1", "o2"], ["y"], name="merge"),
    ]
    inits = [init("emb", rng.normal(0, 1, (32, d)).astype(np.float32)),
             init("wq", rng.normal(0, 0.3, (d, d)).astype(np.float32)),
             init("wk", rng.normal(0, 0.3, (d, d)).astype(np.float32)),
             init("wv", rng.normal(0, 0.3, (d, d)).astype(np.float32)),
             init("scale", np.array(0.25, np.float32)), init("halves", np.array([d // 2, d // 2], np.int64))]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, d // 2])], inits)
    return save(graph, path)


def images(n: int = 24, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, 8, 8)).astype(np.float32)


def quantise(float_path: Path, x: np.ndarray, out: Path, *, per_channel: bool, name: str = "x") -> Path:
    return quantize_static(float_path, Dataset.of(x, batch=1, name=name), settings(per_channel), out)


def quantised_node_names(qdq_path: Path) -> set[str]:
    """Compute nodes of the QDQ graph with a DequantizeLinear input, read independently."""
    g = onnx.load(str(qdq_path)).graph
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in g.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Constant")
            and any(i in dq_out for i in n.input)}


def by_name(result: dict) -> dict[str, dict]:
    return {d["name"]: d for d in result["nodes"]}


@pytest.fixture(scope="module")
def cnn_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diag_cnn")
    x = images()
    f = cnn(tmp / "cnn.onnx")
    q = quantise(f, x, tmp / "cnn.qdq.onnx", per_channel=True)
    calls = {"x": x.reshape(len(x), 1, 3, 8, 8)}
    return f, q, calls, diagnose(f, q, calls, max_calls=8)


def test_every_quantised_node_is_listed_and_ranked(cnn_case):
    _, q, _, result = cnn_case
    assert "error" not in result
    assert result["calls"] == 8
    assert {d["name"] for d in result["nodes"]} == quantised_node_names(q)
    assert result["skipped"] == {}
    sqnrs = [d["sqnr_db"] for d in result["nodes"]]
    assert sqnrs == sorted(sqnrs)
    for d in result["nodes"]:
        assert set(d) == {"name", "op", "output", "sqnr_db", "weights_sqnr_db", "activations_sqnr_db",
                          "cumulative_sqnr_db"}
        assert math.isfinite(d["sqnr_db"]) and d["sqnr_db"] > 10
    nodes = by_name(result)
    # Conv with a Relu the QDQ graph folded away: measured on the Relu's output
    assert nodes["c1"]["output"] == "r1" and nodes["c1"]["weights_sqnr_db"] is not None
    assert nodes["flat"]["weights_sqnr_db"] is None  # no weights: not applicable


def test_cumulative_sqnr_of_graph_output_matches_full_graphs(cnn_case):
    f, q, calls, result = cnn_case
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    fs = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    qs = ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
    ref = np.concatenate([fs.run(["y"], {"x": calls["x"][k]})[0] for k in range(8)]).astype(np.float64)
    got = np.concatenate([qs.run(["y"], {"x": calls["x"][k]})[0] for k in range(8)]).astype(np.float64)
    expected = 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2))
    [last] = [d for d in result["nodes"] if d["output"] == "y"]
    assert last["cumulative_sqnr_db"] == pytest.approx(expected, abs=1e-3)


def test_hard_to_quantise_weights_rank_first(tmp_path):
    x = images()
    f = cnn(tmp_path / "outlier.onnx", outlier=25.0)
    q = quantise(f, x, tmp_path / "outlier.qdq.onnx", per_channel=False)
    result = diagnose(f, q, {"x": x.reshape(len(x), 1, 3, 8, 8)}, max_calls=4)
    nodes = result["nodes"]
    assert nodes[0]["name"] == "c2"
    weights = {d["name"]: d["weights_sqnr_db"] for d in nodes if d["weights_sqnr_db"] is not None}
    assert min(weights, key=weights.get) == "c2"
    assert weights["c2"] < min(v for k, v in weights.items() if k != "c2") - 20
    assert top_nodes(result, 1) == ["c2"]
    assert len(top_nodes(result, 100)) == len(nodes)


def test_activation_outlier_lowers_activation_sqnr(tmp_path, cnn_case):
    f, _, calls, normal = cnn_case
    x = images()
    x[0, 0, 0, 0] = 500.0  # one calibration value stretches the input's range
    q = quantise(f, x, tmp_path / "wide.qdq.onnx", per_channel=True)
    wide = diagnose(f, q, calls, max_calls=8)
    before, after = by_name(normal)["c1"], by_name(wide)["c1"]
    assert after["activations_sqnr_db"] < before["activations_sqnr_db"] - 15
    assert after["sqnr_db"] < before["sqnr_db"] - 15


def test_attention_block_with_int64_ids_constant_and_split(tmp_path):
    f = attention(tmp_path / "attn.onnx")
    ids = np.random.default_rng(3).integers(0, 32, (16, 1, 8)).astype(np.int64)
    q = quantize_static(f, Dataset({"ids": ids}, None, "memory"), settings(True), tmp_path / "attn.qdq.onnx")
    result = diagnose(f, q, {"ids": ids}, max_calls=8)
    assert "error" not in result, result.get("error")
    names = {d["name"] for d in result["nodes"]}
    assert names == quantised_node_names(q)
    # Q·Kᵀ and the weight MatMuls are quantised; softmax (and softmax·V) stay float in a
    # transformer (edgepack.stages.transformer), so they are not diagnosed
    assert {"q", "scores"} <= names and "softmax" not in names
    nodes = by_name(result)
    assert nodes["embed"]["weights_sqnr_db"] is not None  # a DQ'd embedding table gathered by int64 ids
    if "split" in nodes:  # multi-output: measured on the first output
        assert nodes["split"]["output"] == "o1"
    for d in result["nodes"]:
        assert d["sqnr_db"] is not None and not math.isnan(d["sqnr_db"])
        assert d["cumulative_sqnr_db"] is not None


def test_result_is_json_serialisable(cnn_case):
    result = cnn_case[3]
    text = json.dumps(json_safe(result), allow_nan=False)
    back = restore_floats(json.loads(text))
    assert back["nodes"][0]["name"] == result["nodes"][0]["name"]
    assert isinstance(result["method"], str) and "SQNR" in result["method"]


def test_never_raises(tmp_path, cnn_case):
    f, q, calls, _ = cnn_case
    missing = diagnose(tmp_path / "missing.onnx", q, calls)
    assert missing["nodes"] == [] and missing["error"]
    other = attention(tmp_path / "other.onnx")  # a QDQ graph that is not made from this float graph
    mismatched = diagnose(other, q, calls, max_calls=2)
    assert mismatched["nodes"] == [] and mismatched["error"]  # its input "ids" is not fed
    no_calls = diagnose(f, q, {}, max_calls=2)
    assert no_calls["calls"] == 0 and all(d["sqnr_db"] is None for d in no_calls["nodes"])
    assert "error" in diagnose(f, q, {"x": calls["x"][:, :, :2]}, max_calls=2)  # wrong input shape


def test_empty_optional_input_and_time_budget(tmp_path):
    """Resize with an empty optional roi input ("") between two Convs; a zero time budget
    stops after the first call."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["a", "", "scales"], ["up"], name="resize", mode="nearest"),
        helper.make_node("Conv", ["up", "w2"], ["y"], name="c2"),
    ]
    inits = [init("w1", rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)),
             init("w2", rng.normal(0, 0.3, (2, 4, 1, 1)).astype(np.float32)),
             init("scales", np.array([1, 1, 2, 2], np.float32))]
    graph = helper.make_graph(nodes, "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 16, 16])], inits)
    f = save(graph, tmp_path / "up.onnx")
    x = images(8)
    q = quantise(f, x, tmp_path / "up.qdq.onnx", per_channel=True)
    calls = {"x": x.reshape(len(x), 1, 3, 8, 8)}
    result = diagnose(f, q, calls, max_calls=4)
    assert "error" not in result and result["skipped"] == {}
    assert {d["name"] for d in result["nodes"]} == quantised_node_names(q)
    assert "resize" in by_name(result)
    assert diagnose(f, q, calls, max_calls=4, time_budget_s=0.0)["calls"] == 1
