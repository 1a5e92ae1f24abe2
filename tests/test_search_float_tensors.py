"""The search's "wide-range reads kept float" move: a range-compressing op (here Log) that reads
an activation spanning many orders of magnitude gets that tensor (and the chain feeding it)
float, while the MatMul weights stay int8.

The model is a log-power front end in miniature: a linear "transform", its square (power),
a non-negative "mel" MatMul, a Clip floor and a Log; calibration mixes quiet and loud calls
(x1 and x1000), so the Log's input spans ~10 decades as in openWakeWord's melspectrogram.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.search import Budget, int8_moves, run_search, wide_read_move
from edgepack.stages import formats
from edgepack.stages.data import Dataset
from edgepack.stages.quantize import (
    QuantSettings,
    calibrate,
    compressing_reads,
    keep_tensors_float,
    quantize_static,
    ranges_by_name,
    wide_reads,
)


def _save(nodes, inits, out_shape, path):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.save(model, str(path))
    return path


def _log_power_model(path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, (64, 48)).astype(np.float32), "w_stft"),
             numpy_helper.from_array(np.abs(rng.normal(0, 0.2, (48, 16))).astype(np.float32), "w_mel"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-10, np.float32), "floor")]
    nodes = [helper.make_node("MatMul", ["x", "w_stft"], ["spec"], name="stft"),
             helper.make_node("Pow", ["spec", "two"], ["power"], name="power"),
             helper.make_node("MatMul", ["power", "w_mel"], ["mel"], name="mel"),
             helper.make_node("Clip", ["mel", "floor"], ["mel_floor"], name="floor_clip"),
             helper.make_node("Log", ["mel_floor"], ["y"], name="log")]
    return _save(nodes, inits, [1, 16], path)


def _plain_model(path):
    """No range-compressing op: MatMul, Relu, MatMul."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, (64, 32)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.2, (32, 16)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    return _save(nodes, inits, [1, 16], path)


def _data(n=24, loud=(1.0, 1000.0)):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, 1, 64)).astype(np.float32)
    x[::4] *= loud[1]  # every fourth call is loud: it sets the calibrated range
    x[1::4] *= loud[0]
    return Dataset({"x": x}, None, "test")


SETTINGS = QuantSettings(per_channel=True, activation_type="uint8", weight_type="int8",
                         calibration_method="minmax", percentile=99.99, reduce_range=False,
                         symmetric_activations=False)


def _outputs(path, data):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"x": c})[0] for c in data.calls["x"]])


def _sqnr(ref, test):
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    noise = np.sum((ref - test) ** 2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(np.sum(ref ** 2) / noise)) if np.isfinite(noise) else float("-inf")


def _quantised_tensors(model):
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def _float_weights(model):
    return {i.name for i in model.graph.initializer
            if i.data_type == TensorProto.FLOAT and numpy_helper.to_array(i).size > 1}


@pytest.fixture(scope="module")
def logpower(tmp_path_factory):
    d = tmp_path_factory.mktemp("logpower")
    path = _log_power_model(d / "float.onnx")
    data = _data()
    ranges = calibrate(path, data, SETTINGS)
    return d, path, data, ranges


def test_wide_reads_found_from_structure_and_ranges(logpower):
    _, path, _, ranges = logpower
    model = onnx.load(str(path))
    assert compressing_reads(model) == {"log": ("mel_floor", "Log")}
    tensors, nodes = wide_reads(model, ranges_by_name(ranges))
    # the Log's read and the chain feeding it up to the (signed) STFT output, x^2 keeping magnitudes
    assert {"mel_floor", "mel", "power", "spec"} <= set(tensors)
    assert "x" not in tensors  # the graph input is signed and not fed by a magnitude op: stays int8
    assert {"log", "floor_clip", "power"} <= set(nodes)
    assert "mel" not in nodes and "stft" not in nodes  # weight-bearing: weights stay int8


def test_int8_with_wide_reads_float_keeps_the_tensor_float_and_beats_plain_int8(logpower):
    d, path, data, ranges = logpower
    plain = quantize_static(path, None, SETTINGS, d / "plain.onnx", ranges=ranges)
    wide = quantize_static(path, None, dataclasses.replace(SETTINGS, float_wide_reads=True), d / "wide.onnx",
                           ranges=ranges)
    pm, wm = onnx.load(str(plain)), onnx.load(str(wide))
    # the plain int8 graph quantises the Log's read (ONNX Runtime folds the floor Clip into the
    # MatMul's output range, so the MatMul writes "mel_floor")
    assert "mel_floor" in _quantised_tensors(pm)
    assert "floor_clip" not in {n.name for n in pm.graph.node}
    assert "floor_clip" in {n.name for n in wm.graph.node}  # kept, float
    assert not {"mel", "mel_floor", "power"} & _quantised_tensors(wm)
    assert "x" in _quantised_tensors(wm)
    # both MatMul weights are still stored as int8 (no float copy), so the size gate holds
    assert not _float_weights(wm) & {"w_stft", "w_mel"}
    int8_inits = {i.name for i in wm.graph.initializer if i.data_type == TensorProto.INT8}
    assert any(n.startswith("w_mel") for n in int8_inits) and any(n.startswith("w_stft") for n in int8_inits)
    onnx.checker.check_model(wm)
    ref = _outputs(path, data)
    assert np.all(np.isfinite(_outputs(wide, data)))
    assert _sqnr(ref, _outputs(wide, data)) > _sqnr(ref, _outputs(plain, data)) + 10


def test_int16_remedy_with_wide_reads_float_beats_int16_alone(logpower):
    d, path, data, ranges = logpower
    r = ranges_by_name(ranges)
    alone = formats.int16_qdq_graph(path, r, SETTINGS, d / "int16.onnx")
    wide = formats.int16_qdq_graph(path, r, dataclasses.replace(SETTINGS, float_wide_reads=True),
                                   d / "int16.wide.onnx")
    ref = _outputs(path, data)
    assert "mel_floor" not in _quantised_tensors(onnx.load(str(wide)))
    assert _sqnr(ref, _outputs(wide, data)) > _sqnr(ref, _outputs(alone, data)) + 10


def test_narrow_log_read_is_left_quantised(tmp_path):
    path = _log_power_model(tmp_path / "float.onnx")
    data = _data(loud=(1.0, 1.0))
    ranges = ranges_by_name(calibrate(path, data, SETTINGS))
    ranges["mel_floor"] = ranges["mel"] = (5.0, 50.0)  # one decade: int8 holds it
    tensors, nodes = wide_reads(onnx.load(str(path)), ranges)
    assert tensors == {} and nodes == {}
    assert wide_read_move(onnx.load(str(path)), ranges) is None


def test_model_without_range_compressing_ops_is_unchanged(tmp_path):
    path = _plain_model(tmp_path / "plain.onnx")
    model = onnx.load(str(path))
    assert compressing_reads(model) == {}
    assert wide_read_move(model) is None
    assert not any(name.startswith("wide") for name, _, _ in int8_moves("ort-int8", model, []))
    data = _data()
    ranges = calibrate(path, data, SETTINGS)
    a = quantize_static(path, None, SETTINGS, tmp_path / "a.onnx", ranges=ranges)
    b = quantize_static(path, None, dataclasses.replace(SETTINGS, float_wide_reads=True), tmp_path / "b.onnx",
                        ranges=ranges)
    assert onnx.load(str(a)).graph == onnx.load(str(b)).graph
    np.testing.assert_array_equal(_outputs(a, data), _outputs(b, data))


def test_keep_tensors_float_on_a_graph_output(tmp_path):
    path = _plain_model(tmp_path / "plain.onnx")
    data = _data()
    q = onnx.load(str(quantize_static(path, None, SETTINGS, tmp_path / "q.onnx",
                                      ranges=calibrate(path, data, SETTINGS))))
    assert "y" in {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    # "r" is the Relu's output, which the quantiser folded into mm1's range: left quantised
    assert keep_tensors_float(q, {"y", "r"}, onnx.load(str(path))) == ["y"]
    assert {o.name for o in q.graph.output} == {"y"}
    assert [n.name for n in q.graph.node if "y" in n.output] == ["mm2"]  # the MatMul writes it, float
    onnx.checker.check_model(q)
    onnx.save(q, str(tmp_path / "q.float-y.onnx"))
    ref = _outputs(path, data)
    assert _sqnr(ref, _outputs(tmp_path / "q.float-y.onnx", data)) > 20


def _entry(sqnr):
    return {"metrics": {"gates": [{"gate": "min_sqnr_db", "metric": "sqnr_db", "direction": "higher",
                                   "threshold": 30.0, "value": sqnr, "passed": sqnr >= 30.0}],
                        "numerics": {"host": {"sqnr_db": sqnr}}, "gate_numerics": "host",
                        "latency": {"p50_ms": 1.0}},
            "size_bytes": 100}


def test_search_tries_the_move_first_and_remedies_carry_it(logpower):
    _, path, _, ranges = logpower
    model = onnx.load(str(path))
    moves = int8_moves("ort-int8", model, [], ranges=ranges_by_name(ranges))
    assert moves[0][0] == "wide-range reads kept float"
    seen = []

    def evaluate(cand):
        seen.append((cand.name, cand.kind, cand.settings.float_wide_reads))
        if cand.kind == "ort-int16":
            return _entry(45.0 if cand.settings.float_wide_reads else -5.0)
        return _entry(0.0)  # int8 alone gains nothing: the move is not in the best settings

    log = run_search(_entry(0.0), SETTINGS, kind="ort-int8", moves=moves, remedies=["ort-dynamic-int8", "ort-int16"],
                     evaluate=evaluate, budget=Budget(20, 600))
    assert seen[0] == ("wide-range reads kept float", "ort-int8", True)
    assert ("ort-int16 instead", "ort-int16", True) in seen
    # carried into the static QDQ remedy even so, not into dynamic int8 (no QDQ activations)
    assert ("ort-dynamic-int8 instead", "ort-dynamic-int8", False) in seen
    remedy = [t for t in log["trials"] if t["kind"] == "ort-int16"][0]
    assert not [t for t in log["trials"] if t["kind"] == "ort-dynamic-int8"][0]["passed"]
    assert remedy["passed"] and remedy["settings"]["float_wide_reads"] is True
    assert "log" in remedy["kept_float"]
    assert log["added"] == [remedy["index"]]
