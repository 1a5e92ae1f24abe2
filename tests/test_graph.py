"""Stage: cleaning the float graph (static shapes, BN folding, checker)."""

from __future__ import annotations

import models
import numpy as np
import onnx
import pytest
from conftest import ort_session

from edgepack.errors import ModelError
from edgepack.stages.graph import clean_float_graph, io_specs, load_onnx, op_counts


def _run(model_or_path, x):
    import onnxruntime as ort

    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_batchnorm_is_folded_and_outputs_match(tiny_bn_model):
    original = onnx.load(str(tiny_bn_model))
    assert "BatchNormalization" in op_counts(original)  # the fixture really has BN

    cleaned = clean_float_graph(load_onnx(tiny_bn_model), str(tiny_bn_model))

    assert "BatchNormalization" not in op_counts(cleaned)
    onnx.checker.check_model(cleaned, full_check=True)
    x = models.tiny_inputs(8, seed=3)
    for i in range(len(x)):
        want = _run(original, x[i : i + 1])
        got = _run(cleaned, x[i : i + 1])
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_dynamic_batch_with_override_becomes_static(tiny_dynamic_model):
    original = onnx.load(str(tiny_dynamic_model))
    assert original.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"

    cleaned = clean_float_graph(load_onnx(tiny_dynamic_model), "dyn", (2, 3, 8, 8))

    onnx.checker.check_model(cleaned, full_check=True)
    (inp,), (out,) = io_specs(cleaned)
    assert inp.shape == (2, 3, 8, 8)
    assert out.shape == (2, models.TINY_CLASSES)
    for vi in list(cleaned.graph.input) + list(cleaned.graph.output):
        assert all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim), vi
    # ONNX Runtime sees the static shape and computes what the dynamic original computes.
    sess = ort_session_from_model(cleaned)
    assert sess.get_inputs()[0].shape == [2, 3, 8, 8]
    x = models.tiny_inputs(2, seed=4)
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], _run(original, x), atol=1e-4, rtol=1e-4)


def ort_session_from_model(model):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_dynamic_batch_without_override_is_refused(tiny_dynamic_model):
    with pytest.raises(ModelError) as e:
        clean_float_graph(load_onnx(tiny_dynamic_model), str(tiny_dynamic_model))
    msg = str(e.value)
    assert tiny_dynamic_model.name in msg and "'input'" in msg and "input_shape" in msg


@pytest.mark.parametrize("override, needle", [((1, 3, 8), "rank"), ((2, 3, 9, 9), "contradicts")])
def test_bad_override_is_refused(tiny_dynamic_model, override, needle):
    with pytest.raises(ModelError, match=needle):
        clean_float_graph(load_onnx(tiny_dynamic_model), "dyn", override)


def test_static_model_is_unchanged_in_meaning(tiny_model, tiny_float_clean):
    x = models.tiny_inputs(4, seed=5)
    want = np.concatenate([_run(tiny_model, x[i : i + 1]) for i in range(4)])
    got = np.concatenate([ort_session(tiny_float_clean).run(None, {"input": x[i : i + 1]})[0] for i in range(4)])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    onnx.checker.check_model(onnx.load(str(tiny_float_clean)), full_check=True)


def test_load_onnx_errors_name_the_file(tmp_path):
    with pytest.raises(ModelError, match="missing.onnx"):
        load_onnx(tmp_path / "missing.onnx")
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match="garbage.onnx"):
        load_onnx(bad)


def _if_on_input_value(path):
    """out = x * 2 when flag > 0, else concat(x, x): the output's width depends on a value."""
    from onnx import TensorProto
    from onnx import helper as h

    x = h.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])
    flag = h.make_tensor_value_info("flag", TensorProto.INT64, [])
    then_out = h.make_tensor_value_info("t", TensorProto.FLOAT, ["b", "w"])
    else_out = h.make_tensor_value_info("e", TensorProto.FLOAT, ["b", "w"])
    two = h.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    then_g = h.make_graph([h.make_node("Mul", ["x", "two"], ["t"])], "then", [], [then_out], [two])
    else_g = h.make_graph([h.make_node("Concat", ["x", "x"], ["e"], axis=1)], "else", [], [else_out])
    zero = h.make_tensor("zero", TensorProto.INT64, [], [0])
    nodes = [h.make_node("Greater", ["flag", "zero"], ["cond"]),
             h.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)]
    graph = h.make_graph(nodes, "g", [x, flag], [h.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "w"])],
                         [zero])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


def test_an_output_shaped_by_an_input_value_is_pinned_from_the_data(tmp_path):
    """Static inputs, yet the If's output width depends on `flag`: the build takes it from the
    first calibration call and says so in the manifest's output shapes."""
    import edgepack

    model = _if_on_input_value(tmp_path / "if.onnx")
    cleaned = clean_float_graph(load_onnx(model), "if.onnx", {"x": (1, 4)})
    assert [d.dim_value for d in cleaned.graph.output[0].type.tensor_type.shape.dim] == [1, 0]  # width unknown
    for flag, width in ((1, 4), (0, 8)):
        calib = tmp_path / f"c{flag}.npz"
        np.savez(calib, x=np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), flag=np.full(8, flag))
        result = edgepack.build({"name": f"if{flag}", "out": str(tmp_path / "dist"), "targets": ["x86-64"],
                                 "model": {"onnx": str(model), "inputs": {"x": {"shape": [1, 4]}}},
                                 "data": {"calibration": str(calib)}, "verify": {"latency_runs": 2}})
        assert [o.shape for o in result.manifest.model.outputs] == [[1, width]]
        art = result.manifest.targets["x86-64"].artifact("ort-float")
        assert art.metrics.numerics["host"].sqnr_db == float("inf")
