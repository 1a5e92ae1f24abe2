"""Artifacts judged on what the model is for: a YOLO-style detector whose int8 head loses its
class scores fails its task gate, although its whole-output SQNR looks healthy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ort_session, sqnr_db
from onnx import helper, numpy_helper

N, C = 64, 3  # anchors, classes


def _detector(path):
    """[1, 3, 16, 16] image -> [1, N, 4 + C]: boxes (cx, cy in 0..320, w, h in 10..70) and class
    scores in 0..0.3, concatenated under one output as YOLO exports do."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("head", onnx.TensorProto.FLOAT, [1, N, 4 + C])
    init = [numpy_helper.from_array(a, n) for n, a in (
        ("shape", np.array([1, 768], np.int64)),
        ("wb", rng.normal(0, 0.15, (N * 4, 768)).astype(np.float32)),
        ("bb", np.zeros(N * 4, np.float32)),
        ("ws", rng.normal(0, 0.15, (N * C, 768)).astype(np.float32)),
        ("bs", np.zeros(N * C, np.float32)),
        ("box_scale", np.array([320, 320, 60, 60], np.float32)),
        ("box_min", np.array([0, 0, 10, 10], np.float32)),
        ("score_scale", np.array([0.3], np.float32)),
        ("boxes_shape", np.array([1, N, 4], np.int64)),
        ("scores_shape", np.array([1, N, C], np.int64)),
    )]
    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wb", "bb"], ["b0"], transB=1),
        helper.make_node("Sigmoid", ["b0"], ["b1"]),
        helper.make_node("Reshape", ["b1", "boxes_shape"], ["b2"]),
        helper.make_node("Mul", ["b2", "box_scale"], ["b3"]),
        helper.make_node("Add", ["b3", "box_min"], ["boxes"]),
        helper.make_node("Gemm", ["flat", "ws", "bs"], ["s0"], transB=1),
        helper.make_node("Sigmoid", ["s0"], ["s1"]),
        helper.make_node("Reshape", ["s1", "scores_shape"], ["s2"]),
        helper.make_node("Mul", ["s2", "score_scale"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["head"], axis=2),
    ]
    g = helper.make_graph(nodes, "detector", [x], [y], initializer=init)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _count_detections(head: np.ndarray, threshold: float) -> int:
    """An independent check: class scores above the threshold, over every anchor and sample."""
    return int((head[..., 4:] > threshold).sum())


@pytest.fixture(scope="module")
def detector_build(tmp_path_factory):
    from edgepack.api import build

    d = tmp_path_factory.mktemp("detector")
    model = _detector(d / "detector.onnx")
    rng = np.random.default_rng(1)
    np.save(d / "calib.npy", rng.normal(0, 1, (32, 3, 16, 16)).astype(np.float32))
    np.save(d / "eval.npy", rng.normal(0, 1, (16, 3, 16, 16)).astype(np.float32))
    result = build({"name": "detector", "out": str(d / "dist"), "targets": ["x86-64"], "model": {"onnx": str(model)},
                    "data": {"calibration": str(d / "calib.npy"), "evaluation": str(d / "eval.npy")},
                    "verify": {"latency_runs": 2},
                    # the int8 graph as the profile's settings make it: what the gates must catch
                    # (tests/test_search.py covers what the accuracy search then does)
                    "search": {"max_trials": 0},
                    "task": {"name": "detection", "options": {"layout": "boxes_first", "anchors_axis": -2,
                                                               "score_threshold": 0.25}}})
    return result, d


def test_the_search_recovers_detections_by_keeping_the_concatenated_head_float(tmp_path):
    """The same detector with the accuracy search on: the int8 artifact it ships detects
    again (its boxes-and-scores Concat head kept float, or a later trial), checked here by
    running the shipped file."""
    from edgepack.api import build

    model = _detector(tmp_path / "detector.onnx")
    rng = np.random.default_rng(1)
    np.save(tmp_path / "calib.npy", rng.normal(0, 1, (32, 3, 16, 16)).astype(np.float32))
    x = rng.normal(0, 1, (16, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "eval.npy", x)
    result = build({"name": "detector", "out": str(tmp_path / "dist"), "targets": ["x86-64"],
                    "model": {"onnx": str(model)},
                    "data": {"calibration": str(tmp_path / "calib.npy"), "evaluation": str(tmp_path / "eval.npy")},
                    "verify": {"latency_runs": 2},
                    "task": {"name": "detection", "options": {"layout": "boxes_first", "anchors_axis": -2,
                                                               "score_threshold": 0.25}}})
    t = result.manifest.targets["x86-64"]
    run = t.search.runs[0]
    assert run.kind == "ort-int8" and t.search.trials[0].passed is False
    best = t.search.trials[run.chosen]
    i8 = t.artifact("ort-int8")
    recall = {g.gate: g for g in i8.metrics.gates}["task:recall"]
    assert recall.value == pytest.approx(best.metrics["recall"]) and recall.value > t.search.trials[0].metrics["recall"]
    s = ort_session(result.bundle / i8.path)
    head = np.concatenate([s.run(None, {"image": x[i:i + 1]})[0] for i in range(len(x))])
    assert _count_detections(head, 0.25) > 0


def test_collapsed_class_scores_fail_the_detection_gate(detector_build):
    result, d = detector_build
    t = result.manifest.targets["x86-64"]
    f32, i8 = t.artifact("ort-float"), t.artifact("ort-int8")
    gated = i8.metrics.numerics[i8.metrics.gate_numerics]
    # the whole output looks healthy: box coordinates dominate its signal
    assert gated.sqnr_db > 20, gated.sqnr_db
    assert "min_sqnr_db" not in {g.gate for g in i8.metrics.gates}  # the task judges instead
    recall = {g.gate: g for g in i8.metrics.gates}["task:recall"]
    assert recall.passed is False and recall.value < 95 and recall.direction == "higher"
    assert not result.passed and any(f.gate == "task:recall" for f in result.failures)
    fg = {g.gate: g for g in f32.metrics.gates}
    assert fg["task:recall"].passed and fg["task:precision"].passed
    # independently: the float model detects, the int8 file as ONNX Runtime runs it does not
    x = np.load(d / "eval.npy")
    def heads(path):
        s = ort_session(path)
        return np.concatenate([s.run(None, {"image": x[i:i + 1]})[0] for i in range(len(x))])

    float_head = heads(result.bundle / "baseline" / "model.float.onnx")
    int8_head = heads(result.bundle / i8.path)
    assert _count_detections(float_head, 0.25) > 0
    assert _count_detections(int8_head, 0.25) == 0
    assert recall.value == pytest.approx(0.0)
    assert sqnr_db(float_head, int8_head) > 20


def test_task_metrics_are_in_manifest_report_and_device_run(detector_build):
    from edgepack.verification.device import verify_bundle

    result, _ = detector_build
    m = result.manifest
    assert m.model.task.name == "detection" and m.model.task.options["anchors_axis"] == -2
    assert [g.metric for g in m.targets["x86-64"].gates.task] == ["recall", "precision"]
    report = (result.bundle / "report.md").read_text()
    assert "| task |" in report and "recall" in report and "task:recall" in report
    run = verify_bundle(result.bundle, "x86-64", runs=2, warmup=1)
    (a,) = [a for a in run["targets"]["x86-64"]["artifacts"] if a["kind"] == "ort-int8"]
    host = m.targets["x86-64"].artifact("ort-int8").metrics.numerics["host"].task
    assert a["metrics"]["task"]["recall"]["value"] == pytest.approx(host["recall"].value)
    assert a["passed"] is False and any(g["gate"] == "task:recall" and g["passed"] is False for g in a["gates"])


def test_task_options_are_checked_in_config_words(tmp_path):
    from edgepack.config import config_from_dict
    from edgepack.errors import ConfigError

    with pytest.raises(ConfigError, match="score_treshold"):
        config_from_dict({"name": "a", "model": {"onnx": "m.onnx"}, "data": {"calibration": "c.npy"},
                          "targets": ["x86-64"], "task": {"name": "detection", "options": {"score_treshold": 0.3}}})
    with pytest.raises(ConfigError, match="no default gate on 'map'"):
        config_from_dict({"name": "a", "model": {"onnx": "m.onnx"}, "data": {"calibration": "c.npy"},
                          "targets": ["x86-64"], "task": {"name": "detection", "gates": {"map": 50}}})
