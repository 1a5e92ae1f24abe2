"""End to end on a model edgepack has never seen: a torch CNN (concat, residual, maxpool,
dropout; > 100k parameters) trained here and exported to ONNX, built with the config-less
CLI, then measured independently with onnxruntime."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import (
    artifact,
    explain,
    file_entries,
    foreign_isa_target,
    ort_session,
    run_batches,
    same_isa_target,
    top1,
)

TARGETS = ("rpi4", "x86-64")


@pytest.fixture(scope="module")
def built(unseen_bundle):
    assert unseen_bundle.proc.returncode == 0, explain(unseen_bundle.proc)
    return unseen_bundle


@pytest.fixture(scope="module")
def float_top1(unseen_onnx, digits16):
    """Top-1 of the exported float ONNX (not edgepack's cleaned copy) on the eval split."""
    return top1(run_batches(ort_session(unseen_onnx["path"]), digits16.x_eval), digits16.y_eval)


def test_unseen_model_is_big_enough_and_trained(unseen_onnx, built, float_top1):
    assert unseen_onnx["parameters"] >= 100_000
    assert built.manifest["model"]["parameters"] >= 100_000
    assert float_top1 >= 90.0  # a model that learned something, so accuracy can actually drop
    ops = built.manifest["model"]["op_counts"]
    assert {"Concat", "Add", "MaxPool", "Conv", "Gemm"} <= set(ops)
    assert "BatchNormalization" not in ops and "Dropout" not in ops


def test_bundle_layout_and_status(built):
    m = built.manifest
    assert m["status"] == "passed" and m["gates_passed"] is True and m["failures"] == []
    assert set(m["targets"]) == set(TARGETS)
    for t in TARGETS:
        for name in ("model.int8.ort", "model.int8.qdq.onnx",
                     "model.int8.required_operators.config", "model.float32.required_operators.config"):
            assert (built.bundle / t / name).is_file(), f"{t}/{name}"
        # the float artifact: an .ort, or an ONNX file where the profile lets the device lay it out at load
        f = artifact(m, t, "ort-float")["path"]
        assert f in (f"{t}/model.float32.ort", f"{t}/model.float32.onnx") and (built.bundle / f).is_file()
        a = artifact(m, t, "ort-int8")
        assert a["precision"] == "int8" and a["path"] == f"{t}/model.int8.ort"
    assert (built.bundle / "report.md").is_file()
    # nothing half-built is left next to the bundle
    assert sorted(p.name for p in built.out.iterdir()) == [built.bundle.name]


def test_manifest_checksums_match_files(built):
    entries = file_entries(built.manifest)
    assert len(entries) >= 14
    for e in entries:
        p = built.bundle / e["path"]
        assert p.is_file(), e["path"]
        assert p.stat().st_size == e["size_bytes"], e["path"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == e["sha256"], e["path"]


def test_every_bundle_file_is_checksummed(built):
    listed = {e["path"] for e in file_entries(built.manifest)}
    on_disk = {p.relative_to(built.bundle).as_posix() for p in built.bundle.rglob("*") if p.is_file()}
    assert on_disk - listed == {"manifest.json", "report.md", "report.html", "SHA256SUMS"}  # SHA256SUMS: all of them


def test_int8_quantisation_settings_per_target(built):
    m = built.manifest
    assert m["targets"]["x86-64"]["quantization_settings"]["reduce_range"] is True
    assert m["targets"]["rpi4"]["quantization_settings"]["reduce_range"] is False
    assert artifact(m, "x86-64", "ort-int8")["quantization"]["reduce_range"] is True
    io = artifact(m, "rpi4", "ort-int8")["quantization"]["io"]
    assert io["inputs"]["image"]["dtype"] == "uint8" and io["inputs"]["image"]["scale"][0] > 0


def test_int8_accuracy_measured_independently(built, digits16, float_top1):
    """x86-64 int8 .ort run by onnxruntime here: within 1 point of float, and the
    manifest's host numbers agree with this measurement."""
    x, y = digits16.x_eval, digits16.y_eval
    int8 = top1(run_batches(ort_session(built.bundle / "x86-64" / "model.int8.ort"), x), y)
    assert abs(int8 - float_top1) <= 1.0, (int8, float_top1)

    m = built.manifest
    assert m["data"]["evaluation"]["samples"] == len(x) and m["data"]["evaluation"]["labelled"] is True
    assert abs(m["baseline"]["metrics"]["top1"] - float_top1) <= 0.5
    host = artifact(m, "x86-64", "ort-int8")["metrics"]["numerics"]["host"]
    assert host["samples"] == len(x)
    assert abs(host["top1"] - int8) <= 0.5, (host["top1"], int8)


def test_reference_numerics_measured_independently(built, digits16):
    """rpi4's QDQ graph run op by op (no graph optimisation) gives the manifest's
    'reference' top-1."""
    x, y = digits16.x_eval, digits16.y_eval
    sess = ort_session(built.bundle / "rpi4" / "model.int8.qdq.onnx", reference=True)
    ref = top1(run_batches(sess, x), y)
    a = artifact(built.manifest, "rpi4", "ort-int8")
    assert a["reference_graph"]["path"] == "rpi4/model.int8.qdq.onnx"
    assert abs(a["metrics"]["numerics"]["reference"]["top1"] - ref) <= 0.5, (a["metrics"]["numerics"], ref)


def test_gates_use_the_right_numerics(built):
    m = built.manifest
    assert artifact(m, foreign_isa_target(), "ort-int8")["metrics"]["gate_numerics"] == "reference"
    assert artifact(m, same_isa_target(), "ort-int8")["metrics"]["gate_numerics"] == "host"
    for t in TARGETS:
        a = artifact(m, t, "ort-int8")
        (drop,) = [v for v in a["metrics"]["gates"] if v["gate"] == "max_accuracy_drop"]
        used = a["metrics"]["numerics"][a["metrics"]["gate_numerics"]]
        assert drop["value"] == pytest.approx(m["baseline"]["metrics"]["top1"] - used["top1"], abs=1e-3)
        assert drop["passed"] is True


def test_int8_is_less_than_30_percent_of_float(built):
    for t in TARGETS:
        f = (built.bundle / artifact(built.manifest, t, "ort-float")["path"]).stat().st_size
        q = (built.bundle / t / "model.int8.ort").stat().st_size
        assert q <= 0.3 * f, f"{t}: int8 {q} B vs float {f} B = {q / f:.3f}"
        assert artifact(built.manifest, t, "ort-int8")["size_ratio"] == pytest.approx(q / f)


def test_weight_ratio_counts_stored_weights(built):
    """The weight gate's numbers, checked against the reference graphs read with onnx: the
    float .ort stores the float graph's initializers; the int8 .ort stores each weight in
    one byte plus int32 biases and per-channel scales, so between 0.25x and 0.3x."""
    import onnx
    from onnx import numpy_helper

    float_graph = onnx.load(str(built.bundle / "baseline" / "model.float.onnx")).graph
    float_bytes = sum(numpy_helper.to_array(i).nbytes for i in float_graph.initializer)
    for t in TARGETS:
        f, q = artifact(built.manifest, t, "ort-float"), artifact(built.manifest, t, "ort-int8")
        assert f["weight_bytes"] == pytest.approx(float_bytes, rel=0.01)
        qdq = onnx.load(str(built.bundle / q["reference_graph"]["path"])).graph
        int8_weights = sum(numpy_helper.to_array(i).size for i in qdq.initializer
                           if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1)
        assert int8_weights <= q["weight_bytes"] <= 0.3 * f["weight_bytes"]
        assert q["weight_ratio"] == pytest.approx(q["weight_bytes"] / f["weight_bytes"])
        assert not [g for g in q["metrics"]["gates"] if g["gate"] == "max_weight_ratio"]  # reported, not gated


def test_int8_size_gate_against_the_theoretical_int8_size(built):
    """The floor, recomputed from the float graph with onnx: 1 byte per Conv/Gemm/MatMul
    weight, a 4-byte scale and a zero point (1 byte in ONNX, 8 in TFLite) per output channel,
    4 per bias, the rest as stored.
    Every int8 artifact's weight bytes sit within 10 % of it, and the gate reads that ratio."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(built.bundle / "baseline" / "model.float.onnx")).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    weights, biases = {}, set()
    for n in g.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and arrays.get(n.input[1]) is not None \
                and arrays[n.input[1]].ndim >= 2:
            w = arrays[n.input[1]]
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            channels = {"Conv": w.shape[0], "MatMul": w.shape[-1], "Gemm": w.shape[0] if trans_b else w.shape[1]}[
                n.op_type]
            weights[n.input[1]] = (w.size, channels)
            if len(n.input) > 2:
                biases.add(n.input[2])
    rest = sum(arrays[b].size * 4 for b in biases) \
        + sum(a.nbytes for k, a in arrays.items() if k not in weights and k not in biases)
    floors = {rt: sum(n + (4 + zp) * c for n, c in weights.values()) + rest
              for rt, zp in (("onnxruntime", 1), ("litert", 8))}  # TFLite stores zero points as int64
    assert built.manifest["model"]["int8_floor_bytes"] == floors
    for t in TARGETS:
        for q in built.manifest["targets"][t]["artifacts"]:
            if q["precision"] != "int8":
                continue
            assert q["int8_size_ratio"] == pytest.approx(q["weight_bytes"] / floors[q["runtime"]])
            assert 0.9 <= q["int8_size_ratio"] <= 1.1, (t, q["kind"], q["int8_size_ratio"])
            (v,) = [g for g in q["metrics"]["gates"] if g["gate"] == "max_int8_size_ratio"]
            assert v["passed"] is True and v["threshold"] == 1.25 and v["value"] == round(q["int8_size_ratio"], 4)


def test_golden_and_eval_reference_outputs_are_float_outputs(built, digits16):
    b = built.bundle
    sess = ort_session(b / "baseline" / "model.float.onnx")
    with np.load(b / "golden" / "inputs.npz") as z:
        assert z.files == ["in_0"]  # one array per model input, one entry per call (batch 1)
        gx = z["in_0"].reshape(-1, *z["in_0"].shape[2:])
    assert len(gx) >= 1
    np.testing.assert_allclose(gx, digits16.x_eval[: len(gx)])
    with np.load(b / "golden" / "reference_outputs.npz") as z:
        np.testing.assert_allclose(z["arr_0"], run_batches(sess, gx), atol=1e-5)
    with np.load(b / "data" / "eval.npz") as z:
        np.testing.assert_array_equal(z["in_0"].reshape(digits16.x_eval.shape), digits16.x_eval)
        np.testing.assert_array_equal(z["y"], digits16.y_eval)
    with np.load(b / "data" / "eval_reference_outputs.npz") as z:
        np.testing.assert_allclose(z["arr_0"], run_batches(sess, digits16.x_eval), atol=1e-5)


def test_ort_artifacts_run_with_declared_io(built, digits16):
    for t in TARGETS:
        for kind in ("ort-float", "ort-int8"):
            a = artifact(built.manifest, t, kind)
            sess = ort_session(built.bundle / a["path"])
            assert [i.name for i in sess.get_inputs()] == [i["name"] for i in a["inputs"]] == ["image"]
            assert sess.get_inputs()[0].shape == a["inputs"][0]["shape"] == [1, 1, 16, 16]
            out = sess.run(None, {"image": digits16.x_eval[:1]})[0]
            assert out.shape == (1, 10)


def test_summary_printed(built):
    out = built.proc.stdout
    assert "PASSED" in out and "bundle:" in out and str(built.bundle.name) in out
