"""The NLP example (examples/intents): a transformer with int64 token ids and mask, built
from its shipped config through the Python API into a temp dir, and re-verified from the
bundle's own files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, ort_session


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from edgepack.config import load_config
    from edgepack.pipeline import build

    cfg = load_config(REPO / "examples" / "intents" / "edgepack.toml")
    cfg = cfg.model_copy(update={"out": tmp_path_factory.mktemp("intents_dist")})
    return build(cfg)


def test_two_integer_inputs_reach_every_artifact(result):
    m = result.manifest
    assert [(i.name, i.shape, i.dtype) for i in m.model.inputs] == [
        ("input_ids", [1, 32], "int64"), ("attention_mask", [1, 32], "int64")]
    for t in m.targets.values():
        for a in t.artifacts:
            kinds = {i.name: i.dtype for i in a.inputs}
            assert set(kinds) == {"input_ids", "attention_mask"}, a.kind
            assert all(np.dtype(d).kind == "i" for d in kinds.values()), (a.kind, kinds)  # never quantised


def test_float_accuracy_matches_provenance_and_task_metric_is_reported(result):
    """calibration/intents/PROVENANCE.md states 99.00 % (297/300) held out."""
    m = result.manifest
    assert m.baseline.metrics.samples == 300
    assert m.baseline.metrics.top1 == pytest.approx(99.0, abs=0.01)
    report = (result.bundle / "report.md").read_text()
    assert "top1_agreement" in report


def test_ort_int8_keeps_masked_attention_float_and_holds_accuracy(result):
    m = result.manifest
    for target in ("x86-64", "rpi4"):
        a = m.targets[target].artifact("ort-int8")
        gated = a.metrics.numerics[a.metrics.gate_numerics]
        assert gated.top1 >= m.baseline.metrics.top1 - 1.0, (target, gated.top1)
        assert "Softmax" in a.quantized_ops.float_op_types


def test_bundle_reproduces_the_reported_accuracy_independently(result):
    """The int8 QDQ graph in the bundle, run on the bundle's own eval calls with plain
    onnxruntime, gives the accuracy the manifest reports for the reference numerics."""
    b = result.bundle
    with np.load(b / "data" / "eval.npz") as z:
        ids, mask, y = z["in_0"], z["in_1"], z["y"]
    s = ort_session(b / "rpi4" / "model.int8.qdq.onnx", reference=True)
    pred = np.array([s.run(None, {"input_ids": i, "attention_mask": k})[0].argmax() for i, k in zip(ids, mask)])
    top1 = 100.0 * np.mean(pred == y)
    reported = result.manifest.targets["rpi4"].artifact("ort-int8").metrics.numerics["reference"].top1
    assert top1 == pytest.approx(reported, abs=1e-6)
