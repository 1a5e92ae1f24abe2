"""The search's "joins of mismatched ranges kept float" move: a Concat that puts a detector's
box coordinates (hundreds) and its class scores (below one) under one int8 scale rounds the
scores away; keeping that join float gives them back, while a join of similar ranges is
left to int8.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from conftest import ort_session
from onnx import TensorProto, helper, numpy_helper

from edgepack.search import JOIN_RANGE_RATIO, int8_moves, mismatched_joins
from edgepack.stages.data import Dataset
from edgepack.stages.quantize import QuantSettings, calibrate, quantize_static, ranges_by_name

SETTINGS = QuantSettings(per_channel=True, activation_type="uint8", weight_type="int8",
                         calibration_method="minmax", percentile=99.99, reduce_range=False,
                         symmetric_activations=False)


def _head(path):
    """features → boxes (Gemm ×300, |x| ~ hundreds) and scores (Sigmoid, < 1), joined by
    Concat and reshaped to [1, 2, 8]; a balanced Add of two similar branches beside it."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (32, 16)).astype(np.float32), "w_feat"),
             numpy_helper.from_array(rng.normal(0, 60.0, (8, 16)).astype(np.float32), "w_box"),
             numpy_helper.from_array(rng.normal(0, 0.3, (8, 16)).astype(np.float32), "w_cls"),
             numpy_helper.from_array(np.full(8, -3.0, np.float32), "b_cls"),
             numpy_helper.from_array(rng.normal(0, 0.3, (16, 16)).astype(np.float32), "w_a"),
             numpy_helper.from_array(rng.normal(0, 0.3, (16, 16)).astype(np.float32), "w_b"),
             numpy_helper.from_array(np.array([1, 2, 8], np.int64), "shape")]
    nodes = [helper.make_node("Gemm", ["x", "w_feat"], ["f0"], name="feat"),
             helper.make_node("Relu", ["f0"], ["f"], name="relu"),
             helper.make_node("MatMul", ["f", "w_a"], ["fa"], name="branch_a"),
             helper.make_node("MatMul", ["f", "w_b"], ["fb"], name="branch_b"),
             helper.make_node("Add", ["fa", "fb"], ["g"], name="balanced_add"),
             helper.make_node("Gemm", ["g", "w_box"], ["boxes"], transB=1, name="box_head"),
             helper.make_node("Gemm", ["g", "w_cls", "b_cls"], ["logits"], transB=1, name="cls_head"),
             helper.make_node("Sigmoid", ["logits"], ["scores"], name="sigmoid"),
             helper.make_node("Concat", ["boxes", "scores"], ["cat"], axis=1, name="join"),
             helper.make_node("Reshape", ["cat", "shape"], ["y"], name="out")]
    g = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8])], inits)
    onnx.save(onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])),
              str(path))
    return path


def _data(n=32, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 1, 32)).astype(np.float32)


def _scores(path, x):
    s = ort_session(path, reference=True)
    return np.stack([s.run(None, {"x": xi})[0][0, 1] for xi in x])  # the scores row


def test_the_mismatched_join_is_found_and_the_balanced_add_is_not(tmp_path):
    path = _head(tmp_path / "head.onnx")
    ranges = ranges_by_name(calibrate(path, Dataset({"x": _data()}, None, "test"), SETTINGS))
    found = mismatched_joins(onnx.load(str(path)), ranges)
    assert list(found) == ["join"], found
    assert "boxes" in found["join"] and "scores" in found["join"]
    spans = [max(abs(v) for v in ranges[t]) for t in ("fa", "fb")]
    assert max(spans) / min(spans) < JOIN_RANGE_RATIO  # the Add's branches are alike: left to int8
    moves = [name for name, _, _ in int8_moves("ort-int8", onnx.load(str(path)), [], ranges=ranges)]
    assert "joins of mismatched ranges kept float" in moves
    assert "joins of mismatched ranges kept float" not in [
        name for name, _, _ in int8_moves("ort-int8", onnx.load(str(path)), [])]  # no ranges, no move


def test_keeping_the_join_float_gives_the_scores_back(tmp_path):
    """The scores through the int8 graph (ONNX Runtime's reference QDQ execution) against
    float: with the join quantised nearly all of them round to one level; with it kept float
    (the move's settings) they track float closely."""
    path = _head(tmp_path / "head.onnx")
    calib = Dataset({"x": _data()}, None, "test")
    ranges = calibrate(path, calib, SETTINGS)
    moves = {name: fn for name, _, fn in int8_moves("ort-int8", onnx.load(str(path)), [],
                                                    ranges=ranges_by_name(ranges))}
    joined, kept = moves["joins of mismatched ranges kept float"](SETTINGS)
    assert set(kept) == {"join"} and joined == dataclasses.replace(SETTINGS, keep_float=("join",))
    x = _data(16, seed=7)
    want = _scores(path, x)
    plain = _scores(quantize_static(path, calib, SETTINGS, tmp_path / "plain.onnx", ranges=ranges), x)
    float_join = _scores(quantize_static(path, calib, joined, tmp_path / "join.onnx", ranges=ranges), x)
    err_plain = np.abs(plain - want).mean()
    err_join = np.abs(float_join - want).mean()
    print(f"mean |score error|: join quantised {err_plain:.4f}, join float {err_join:.4f} "
          f"(scores mean {want.mean():.3f})")
    assert err_join < err_plain / 5 and err_join < 0.02
