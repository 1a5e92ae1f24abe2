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
