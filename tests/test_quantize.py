"""Stage: static int8 quantisation (QDQ) and the per-target settings it uses."""

from __future__ import annotations

import models
import numpy as np
import onnx
import pytest
from conftest import REPO, ort_session, sqnr_db
from onnx import TensorProto, numpy_helper

from edgepack.config import QuantOverrides
from edgepack.errors import ConfigError
from edgepack.stages.data import Dataset
from edgepack.stages.quantize import quantize_static, resolve_settings
from edgepack.targets import load_profile, load_targets, resolve_target


def _calib():
    return Dataset.of(models.tiny_inputs(32, seed=1))


def _quantize(float_path, out, target="rpi4", **overrides):
    settings = resolve_settings(resolve_target(target), QuantOverrides(**overrides))
    return quantize_static(float_path, _calib(), settings, out), settings


def _weight_arrays(qdq: onnx.ModelProto) -> dict[str, np.ndarray]:
    """int8 weight tensors feeding the DequantizeLinear in front of each Conv/Gemm weight."""
    inits = {i.name: i for i in qdq.graph.initializer}
    producers = {o: n for n in qdq.graph.node for o in n.output}
    out = {}
    for n in qdq.graph.node:
        if n.op_type in ("Conv", "Gemm"):
            dq = producers[n.input[1]]
            assert dq.op_type == "DequantizeLinear", f"{n.name}: weight not dequantised"
            init = inits[dq.input[0]]
            assert init.data_type == TensorProto.INT8, f"{n.name}: weight stored as {init.data_type}"
            out[n.name] = numpy_helper.to_array(init)
    return out


def test_qdq_model_has_qdq_nodes_and_int8_weights(tiny_float_clean, tmp_path):
    path, settings = _quantize(tiny_float_clean, tmp_path / "q.onnx")
    q = onnx.load(str(path))
    onnx.checker.check_model(q)
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 4
    weights = _weight_arrays(q)
    assert set(weights) and all(w.dtype == np.int8 for w in weights.values())
    # no float copy of the weights is left behind
    assert not any(i.data_type == TensorProto.FLOAT and np.prod(i.dims) >= 16 * 3 * 9 for i in q.graph.initializer)
    # and it still computes (approximately) the float model
    x = models.tiny_inputs(16, seed=9)
    f = np.concatenate([ort_session(tiny_float_clean).run(None, {"input": x[i:i + 1]})[0] for i in range(16)])
    r = np.concatenate([ort_session(path, reference=True).run(None, {"input": x[i:i + 1]})[0] for i in range(16)])
    assert sqnr_db(f, r) > 25


@pytest.mark.parametrize("target, expected", [("x86-64", True), ("rpi4", False), ("rpi5", False),
                                              ("android-arm64", False)])
def test_reduce_range_resolved_from_shipped_profiles(target, expected):
    profile = resolve_target(target)
    assert profile.resolved_reduce_range() is expected
    assert resolve_settings(profile, QuantOverrides()).reduce_range is expected


def _vnni_profile(dirpath, name="vnni-box"):
    text = (REPO / "targets" / "x86-64.toml").read_text()
    text = text.replace('features = ["avx2", "fma"]', 'features = ["avx2", "fma", "avx512f", "avx512_vnni"]')
    assert "avx512_vnni" in text
    dirpath.mkdir(parents=True, exist_ok=True)
    p = dirpath / f"{name}.toml"
    p.write_text(text)
    return p


def test_reduce_range_false_for_x86_with_vnni_by_path(tmp_path):
    p = _vnni_profile(tmp_path / "profiles")
    profile = resolve_target(str(p))
    assert profile.name == "vnni-box" and profile.cpu.arch == "x86_64"
    assert resolve_settings(profile, QuantOverrides()).reduce_range is False


def test_reduce_range_false_for_x86_with_vnni_via_targets_dirs(tmp_path):
    _vnni_profile(tmp_path / "profiles")
    assert "vnni-box" not in load_targets()
    profile = resolve_target("vnni-box", [tmp_path / "profiles"])
    assert resolve_settings(profile, QuantOverrides()).reduce_range is False
    # the shipped ones stay visible next to it
    assert {"vnni-box", "x86-64", "rpi4"} <= set(load_targets([tmp_path / "profiles"]))


def test_reduce_range_override_wins():
    assert resolve_settings(resolve_target("rpi4"), QuantOverrides(reduce_range=True)).reduce_range is True
    assert resolve_settings(resolve_target("x86-64"), QuantOverrides(reduce_range=False)).reduce_range is False


def test_reduce_range_really_uses_7_bit_weights(tiny_float_clean, tmp_path):
    full, s_full = _quantize(tiny_float_clean, tmp_path / "full.onnx", "rpi4")
    reduced, s_red = _quantize(tiny_float_clean, tmp_path / "reduced.onnx", "x86-64")
    assert (s_full.reduce_range, s_red.reduce_range) == (False, True)
    w_full = _weight_arrays(onnx.load(str(full)))
    w_red = _weight_arrays(onnx.load(str(reduced)))
    assert max(np.abs(w.astype(int)).max() for w in w_full.values()) == 127
    assert max(np.abs(w.astype(int)).max() for w in w_red.values()) <= 64


def test_unknown_calibration_method_is_a_config_error():
    with pytest.raises(ConfigError, match="calibration_method"):
        resolve_settings(resolve_target("rpi4"), QuantOverrides(calibration_method="magic"))


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_other_calibration_methods_produce_working_models(tiny_float_clean, tmp_path, method):
    path, settings = _quantize(tiny_float_clean, tmp_path / f"{method}.onnx", calibration_method=method)
    assert settings.calibration_method == method
    x = models.tiny_inputs(8, seed=11)
    f = np.concatenate([ort_session(tiny_float_clean).run(None, {"input": x[i:i + 1]})[0] for i in range(8)])
    r = np.concatenate([ort_session(path, reference=True).run(None, {"input": x[i:i + 1]})[0] for i in range(8)])
    assert sqnr_db(f, r) > 15


def test_profile_files_are_validated(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((REPO / "targets" / "rpi4.toml").read_text().replace("threads = 4", "threads = 0"))
    with pytest.raises(ConfigError, match="threads"):
        load_profile(bad)


def _masked_attention_onnx(path, mask_value: float):
    """scores = x @ W + mask_bias (mask_value on the last 3 of 8 positions); Softmax; @ V."""
    from onnx import helper

    rng = np.random.default_rng(0)
    bias = np.zeros((1, 4, 8), np.float32)
    bias[..., 5:] = mask_value
    inits = [numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(bias, "bias"),
             numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "v")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["scores"], name="qk"),
             helper.make_node("Add", ["scores", "bias"], ["masked"], name="mask_add"),
             helper.make_node("Softmax", ["masked"], ["attn"], axis=-1, name="softmax"),
             helper.make_node("MatMul", ["attn", "v"], ["y"], name="av")]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])], inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("mask_value, kept", [(-1e4, {"mask_add", "softmax"}), (-1.0, set())],
                         ids=["additive-mask", "ordinary-bias"])
def test_masked_attention_stays_float(tmp_path, mask_value, kept):
    from edgepack.stages.quantize import calibrate, float_nodes, ranges_by_name

    model = _masked_attention_onnx(tmp_path / "attn.onnx", mask_value)
    calib = Dataset({"x": np.random.default_rng(1).normal(size=(16, 1, 4, 8)).astype(np.float32)}, None, "memory")
    settings = resolve_settings(resolve_target("rpi4"), QuantOverrides())
    ranges = calibrate(model, calib, settings)
    found = float_nodes(onnx.load(str(model)), ranges_by_name(ranges))
    assert set(found) == kept
    assert all("masked attention" in why for why in found.values())
    qdq = onnx.load(str(quantize_static(model, calib, settings, tmp_path / "q.onnx", ranges=ranges)))
    producers = {o: n.op_type for n in qdq.graph.node for o in n.output}
    softmax = next(n for n in qdq.graph.node if n.op_type == "Softmax")
    assert (producers.get(softmax.input[0]) == "DequantizeLinear") == (not kept)
    if kept:  # and the float graph's outputs are what the int8 graph keeps where it matters
        x = calib.calls["x"][:4].reshape(4, 4, 8)
        f = np.stack([ort_session(model).run(None, {"x": v[None]})[0] for v in x])
        q = np.stack([ort_session(tmp_path / "q.onnx", reference=True).run(None, {"x": v[None]})[0] for v in x])
        assert sqnr_db(f, q) > 25


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_takes_an_infinite_mask_fill(tmp_path, method):
    """Scores masked with -inf before a Softmax (as all-MiniLM-L6-v2's export does) used to
    stop ONNX Runtime's histogram calibrators ("supplied range of [-inf, inf] is not finite");
    the ranges are now finite, taken from the finite values, and the int8 model runs."""
    from onnx import helper

    from edgepack.stages.quantize import calibrate, ranges_by_name

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(-np.inf, np.float32), "fill")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["scores"], name="qk"),
             helper.make_node("Where", ["mask", "scores", "fill"], ["masked"], name="mask"),
             helper.make_node("Softmax", ["masked"], ["p"], axis=-1, name="softmax"),
             helper.make_node("MatMul", ["p", "w"], ["y"], name="pv")]
    g = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8]),
                                          helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])], inits)
    path = tmp_path / "attn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.normal(size=(16, 1, 4, 8)).astype(np.float32)
    mask = np.ones((16, 1, 4, 8), bool)
    mask[:, :, :, 6:] = False  # the last two keys are padding
    calib = Dataset({"x": x, "mask": mask}, None, "test")
    settings = resolve_settings(resolve_target("rpi4"), QuantOverrides(calibration_method=method))
    ranges = calibrate(path, calib, settings)
    by_name = ranges_by_name(ranges)
    assert all(np.isfinite(v).all() for v in by_name.values()), by_name
    scores = x[..., :] @ numpy_helper.to_array(inits[0])
    assert by_name["masked"][0] >= scores.min() - 1e-3  # the range is the finite scores', not -inf
    out = quantize_static(path, calib, settings, tmp_path / "q.onnx", ranges=ranges)
    y = ort_session(out).run(None, {"x": x[0], "mask": mask[0]})[0]
    assert np.isfinite(y).all()
