"""Whole models through the TFLite writer: standard architectures, the unseen trained CNN,
the embedded example, and what a build does with an operator TFLite cannot express."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import REPO, artifact, cli, load_manifest, top1
from onnx import helper

from edgepack.inspection import inspect_artifact
from edgepack.stages.data import Dataset
from edgepack.stages.graph import clean_float_graph
from edgepack.stages.quantize import QuantSettings, calibrate, ranges_by_name
from edgepack.tflite import quantize as tq
from edgepack.tflite.convert import convert
from edgepack.verification.metrics import sqnr_db
from edgepack.verification.runtimes import open_artifact

sys.path.insert(0, str(REPO / "scripts"))
import zoo  # noqa: E402

ARCHS = {
    # name: (factory kwargs, input shape) — scaled down so the suite stays fast
    "mobilenet_v2": ({"num_classes": 100, "width_mult": 0.5}, (1, 3, 96, 96)),
    "resnet18": ({"num_classes": 100, "width_mult": 0.25}, (1, 3, 64, 64)),
    "residual_cnn": ({"num_classes": 10}, (1, 3, 32, 32)),
}


def _smooth(n, shape, seed):
    rng = np.random.default_rng(seed)
    _, c, h, w = shape
    x = rng.standard_normal((n, c, h // 4, w // 4)).astype(np.float32)
    return np.repeat(np.repeat(x, 4, 2), 4, 3)


@pytest.fixture(scope="module", params=sorted(ARCHS))
def arch(request, tmp_path_factory):
    import torch

    from edgepack.stages.export import export_torch

    kwargs, shape = ARCHS[request.param]
    torch.manual_seed(0)
    model = getattr(zoo, request.param)(**kwargs).eval()
    d = tmp_path_factory.mktemp(request.param)
    raw = export_torch(model, shape, d / "raw.onnx")
    cleaned = clean_float_graph(onnx.load(str(raw)), str(raw))
    onnx.save(cleaned, str(d / "float.onnx"))
    return request.param, cleaned, d / "float.onnx", shape


def _onnx_outputs(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _tflite_outputs(tmp_path, data: bytes, io, x, name="m.tflite"):
    path = tmp_path / name
    path.write_bytes(data)
    layout = {"inputs": [{"perm": t["perm"]} for t in io["inputs"]],
              "outputs": [{"perm": t["perm"]} for t in io["outputs"]]}
    s = open_artifact(path, 1, layout)
    return np.concatenate([s.run(x[i:i + 1])[0] for i in range(len(x))]), path


def test_float32_tflite_matches_onnxruntime(arch, tmp_path):
    name, model, float_path, shape = arch
    x = _smooth(8, shape, seed=1)
    ref = _onnx_outputs(float_path, x)
    data, io = convert(model)
    out, _ = _tflite_outputs(tmp_path, data, io, x)
    assert (ref.argmax(1) == out.argmax(1)).all(), f"{name}: top-1 differs from onnxruntime"
    assert sqnr_db(ref, out) >= 50, f"{name}: SQNR {sqnr_db(ref, out):.1f} dB"


def test_all_variants_run_and_int8_is_integer(arch, tmp_path):
    name, model, float_path, shape = arch
    x = _smooth(4, shape, seed=2)
    ref = _onnx_outputs(float_path, x)
    data, io = convert(model)
    settings = QuantSettings(True, "uint8", "int8", "minmax", 99.999, False, False)
    ranges = ranges_by_name(calibrate(float_path, Dataset.of(_smooth(16, shape, seed=3), batch=shape[0]), settings))
    variants = {
        "float16": (tq.to_float16(data), 40),
        "dynamic-int8": (tq.to_dynamic_range_int8(data), 15),
        "int8": (tq.to_full_int8(data, [], io_type="int8", ranges=ranges), 15),
    }
    for kind, (blob, min_sqnr) in variants.items():
        out, path = _tflite_outputs(tmp_path, blob, io, x, f"{kind}.tflite")
        assert sqnr_db(ref, out) >= min_sqnr, f"{name} {kind}: SQNR {sqnr_db(ref, out):.1f} dB"
        info = inspect_artifact(path)
        if kind == "int8":
            assert info["quantization"].startswith("full integer"), info["quantization"]
            assert info["inputs"][0]["dtype"] == "int8" and info["inputs"][0]["scale"]
        else:
            assert info["tensor_dtypes"]["activations"].get("float32"), f"{kind} should keep float activations"
    # int8 weights; int32 biases and per-channel scales keep small models above 0.25x
    assert len(variants["int8"][0]) < 0.4 * len(data)
    _assert_compact_int8(variants["int8"][0], io, x, tmp_path)


def _assert_compact_int8(blob: bytes, io, x, tmp_path):
    """The shipped int8 file carries no calibration min/max on constants, stores each
    distinct zero-point vector once, and computes exactly what the same model written
    without sharing computes."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(blob, 0)
    g = model.Subgraphs(0)
    zp_vectors: dict[bytes, set[int]] = {}
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        q = t.Quantization()
        if q is None or q.ScaleLength() == 0:
            continue
        if model.Buffers(t.Buffer()).DataLength():
            assert q.MinLength() == 0 and q.MaxLength() == 0, f"constant {t.Name()} keeps its min/max"
        if q.ZeroPointLength() > 1:
            at = q._tab.Vector(q._tab.Offset(10))  # QuantizationParameters.zero_point
            zp_vectors.setdefault(q.ZeroPointAsNumpy().tobytes(), set()).add(at)
    assert zp_vectors, "no per-channel tensors found"
    assert all(len(places) == 1 for places in zp_vectors.values()), "equal zero-point vectors stored twice"

    plain = flatbuffers.Builder(1024)
    plain.Finish(schema.ModelT.InitFromPackedBuf(blob, 0).Pack(plain), file_identifier=b"TFL3")
    unshared = bytes(plain.Output())
    assert len(unshared) > len(blob)
    ours, _ = _tflite_outputs(tmp_path, blob, io, x, "shared.tflite")
    theirs, _ = _tflite_outputs(tmp_path, unshared, io, x, "unshared.tflite")
    np.testing.assert_array_equal(ours, theirs)


def test_unseen_cnn_full_int8_tflite_is_integer_and_within_a_point(unseen_bundle, digits16):
    """Independent measurement of the rpi4 TFLite artifacts of the unseen trained CNN."""
    assert unseen_bundle.proc.returncode == 0, unseen_bundle.proc.stderr
    m = unseen_bundle.manifest
    float_top1 = m["baseline"]["metrics"]["top1"]
    for kind in ("tflite-float32", "tflite-int8"):
        a = artifact(m, "rpi4", kind)
        path = unseen_bundle.bundle / a["path"]
        s = open_artifact(path, 1, a["layout"])
        logits = np.concatenate([s.run(digits16.x_eval[i:i + 1])[0] for i in range(len(digits16.x_eval))])
        measured = top1(logits, digits16.y_eval)
        assert float_top1 - measured <= 1.0, f"{kind}: {measured:.2f} % vs float {float_top1:.2f} %"
        stated = a["metrics"]["numerics"]["host"]["top1"]
        assert abs(stated - measured) <= 0.5, f"{kind}: manifest says {stated}, measured {measured}"
    info = inspect_artifact(unseen_bundle.bundle / artifact(m, "rpi4", "tflite-int8")["path"])
    assert info["quantization"].startswith("full integer")
    io = artifact(m, "rpi4", "tflite-int8")["inputs"][0]
    assert io["dtype"] == "int8" and io["scale"] > 0 and io["zero_point"] is not None
    assert artifact(m, "rpi4", "tflite-int8")["layout"]["inputs"][0]["layout"] == "NHWC"


def test_example_tflite_int8_passes_its_gates(digits_example):
    m = digits_example.manifest
    for target in ("rpi4", "rpi5", "android-arm64"):
        a = m.targets[target].artifact("tflite-int8")
        assert a.metrics.passed, a.metrics.gates
        assert a.metrics.numerics["reference"].top1 >= m.baseline.metrics.top1 - 1.0


def test_nchw_io_layout_on_request(tmp_path, unseen_onnx, digits16):
    """`--tflite-layout NCHW` keeps the ONNX input layout; verify still passes."""
    out = tmp_path / "dist"
    proc = cli("build", "--onnx", unseen_onnx["path"], "--calib", digits16.calib_npy, "--eval", digits16.eval_npz,
               "--targets", "rpi4", "--out", out, "--tflite-layout", "NCHW", "--tflite-io", "float32",
               "--latency-runs", "3")
    assert proc.returncode == 0, proc.stderr
    bundle = out / "unseen_cnn-0.1.0"
    a = artifact(load_manifest(bundle), "rpi4", "tflite-int8")
    assert a["layout"]["inputs"][0]["layout"] == "NCHW"
    assert a["inputs"][0]["shape"] == [1, 1, 16, 16] and a["inputs"][0]["dtype"] == "float32"
    assert cli("verify", bundle, "--target", "rpi4", "--runs", "3").returncode == 0


def _topk_model(path: Path) -> Path:
    """A graph with an op TFLite cannot express (TopK); ONNX Runtime runs it."""
    x = helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 1, 16, 16])
    y = helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, 4])
    idx = helper.make_tensor_value_info("idx", onnx.TensorProto.INT64, [1, 4])
    k = helper.make_tensor("k", onnx.TensorProto.INT64, [1], [4])
    shape = helper.make_tensor("shape", onnx.TensorProto.INT64, [2], [1, 256])
    rng = np.random.default_rng(0)  # weights enough for int8 to shrink them below the 0.3x gate
    w = onnx.numpy_helper.from_array(rng.normal(0, 0.1, (64, 256)).astype(np.float32), "w")
    b = onnx.numpy_helper.from_array(np.zeros(64, np.float32), "b")
    nodes = [helper.make_node("Reshape", ["image", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "b"], ["dense"], transB=1),
             helper.make_node("TopK", ["dense", "k"], ["scores", "idx"], name="pick_top4")]
    g = helper.make_graph(nodes, "topk", [x], [y, idx], initializer=[k, shape, w, b])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_unsupported_operator_costs_that_artifact_not_the_build(tmp_path, digits16):
    """TFLite cannot express TopK: the TFLite artifacts are recorded as not produced (node and
    op named), everything else is built and verified, and the required ones fail the build."""
    path = _topk_model(tmp_path / "topk.onnx")
    out = tmp_path / "dist"
    proc = cli("build", "--onnx", path, "--calib", digits16.calib_npy, "--targets", "rpi4,x86-64", "--out", out,
               "--latency-runs", "3")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    m = load_manifest(out / "topk-0.1.0")
    rpi4 = m["targets"]["rpi4"]
    assert [a["kind"] for a in rpi4["artifacts"]] == ["ort-float", "ort-int8"]
    missing = {n["kind"]: n for n in rpi4["not_produced"]}
    assert set(missing) == {"tflite-float32", "tflite-int8"}
    for n in missing.values():
        assert (n["op"], n["node"], n["required"]) == ("TopK", "pick_top4", True), n
    assert m["targets"]["x86-64"]["passed"] is True and m["targets"]["x86-64"]["not_produced"] == []
    assert {(f["source"], f["target"], f["artifact"]) for f in m["failures"]} == \
        {("build", "rpi4", "tflite-float32"), ("build", "rpi4", "tflite-int8")}
    assert "pick_top4" in (out / "topk-0.1.0" / "report.md").read_text()
    assert "not built" in proc.stdout
    # what was built verifies from the bundle alone
    assert cli("verify", out / "topk-0.1.0", "--runs", "2").returncode == 0


def test_required_artifacts_decide_whether_a_missing_one_fails(tmp_path, digits16):
    from edgepack.api import build

    path = _topk_model(tmp_path / "topk.onnx")
    result = build({"name": "topk", "out": str(tmp_path / "dist"), "targets": ["rpi4"], "model": {"onnx": str(path)},
                    "data": {"calibration": str(digits16.calib_npy)},
                    "verify": {"latency_runs": 2, "required_artifacts": ["ort-float", "ort-int8"]}})
    assert result.passed and result.exit_code == 0, [f.text() for f in result.failures]
    t = result.manifest.targets["rpi4"]
    assert [n.kind for n in t.not_produced] == ["tflite-float32", "tflite-int8"]
    assert not any(n.required for n in t.not_produced)
