"""Gates: failing gates give exit 1 and a bundle marked failed; unlabelled data gates on SQNR."""

from __future__ import annotations

import pytest
from conftest import (
    artifact,
    cli,
    explain,
    failure_texts,
    foreign_isa_target,
    load_manifest,
    ort_session,
    run_batches,
    same_isa_target,
    sqnr_db,
    write_toml,
)


def _verdict(a, gate):
    found = [v for v in a["metrics"]["gates"] if v["gate"] == gate]
    assert len(found) == 1, (gate, a["metrics"]["gates"])
    return found[0]


@pytest.fixture(scope="module")
def failing_build(tmp_path_factory, tiny_model, tiny_calib, tiny_eval):
    """Tiny model; a latency gate no CPU can meet and a size gate an int8 file cannot meet."""
    d = tmp_path_factory.mktemp("failing")
    cfg = write_toml(d / "edgepack.toml", f"""
        name = "gated"
        version = "2.0.0"
        out = "dist"
        targets = ["{same_isa_target()}", "{foreign_isa_target()}"]

        [model]
        onnx = "{tiny_model}"

        [data]
        calibration = "{tiny_calib}"
        evaluation = "{tiny_eval}"

        [gates]
        max_latency_ms = 0.000001
        max_size_ratio = 0.01
        max_weight_ratio = 0.2
        max_int8_size_ratio = 0.5

        [verify]
        latency_runs = 3
        warmup_runs = 1
    """)
    proc = cli("build", cfg)
    return proc, d / "dist" / "gated-2.0.0"


def test_failed_gate_exits_1_and_still_writes_a_failed_bundle(failing_build):
    proc, bundle = failing_build
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert bundle.is_dir() and not (bundle.parent / f".{bundle.name}.partial").exists()
    m = load_manifest(bundle)
    assert m["status"] == "failed" and m["gates_passed"] is False
    assert any(f["gate"] == "max_latency_ms" and f["source"] == "gate" for f in m["failures"])
    assert "failed: " in proc.stderr and "max_latency_ms" in proc.stderr
    report = (bundle / "report.md").read_text()
    assert "## Failures" in report and all(line in report for line in failure_texts(m))


def test_latency_gate_judged_only_on_the_targets_isa(failing_build):
    _, bundle = failing_build
    m = load_manifest(bundle)
    same = artifact(m, same_isa_target(), "ort-int8")
    v = _verdict(same, "max_latency_ms")
    assert v["passed"] is False and v["value"] > v["threshold"]
    assert same["metrics"]["passed"] is False and m["targets"][same_isa_target()]["passed"] is False
    foreign = artifact(m, foreign_isa_target(), "ort-int8")
    v = _verdict(foreign, "max_latency_ms")
    assert v["passed"] is None and "not judged" in v["note"]
    failing_targets = {f["target"] for f in m["failures"] if f["gate"] == "max_latency_ms"}
    assert failing_targets == {same_isa_target()}


def test_size_gate_applies_to_quantised_artifacts_only(failing_build):
    _, bundle = failing_build
    m = load_manifest(bundle)
    for t in m["targets"]:
        v = _verdict(artifact(m, t, "ort-int8"), "max_size_ratio")
        q = (bundle / t / "model.int8.ort").stat().st_size
        f = (bundle / artifact(m, t, "ort-float")["path"]).stat().st_size
        assert v["value"] == pytest.approx(q / f, abs=1e-3) and v["passed"] is False
        w = _verdict(artifact(m, t, "ort-int8"), "max_weight_ratio")
        assert w["threshold"] == 0.2 and w["value"] > 0.2 and w["passed"] is False  # int8 cannot go below 0.25x
        assert f"{t}/ort-int8: max_weight_ratio" in " ".join(failure_texts(m))
        i = _verdict(artifact(m, t, "ort-int8"), "max_int8_size_ratio")
        floor = artifact(m, t, "ort-int8")["weight_bytes"] / m["model"]["int8_floor_bytes"]["onnxruntime"]
        assert i["value"] == pytest.approx(floor, abs=1e-4) and i["value"] > 0.9 and i["passed"] is False
        float_gates = {g["gate"] for g in artifact(m, t, "ort-float")["metrics"]["gates"]}
        assert not float_gates & {"max_size_ratio", "max_weight_ratio", "max_int8_size_ratio"}


def test_unlabelled_eval_gates_on_sqnr(unseen_unlabelled_bundle, digits16):
    proc, bundle = unseen_unlabelled_bundle.proc, unseen_unlabelled_bundle.bundle
    assert proc.returncode == 0, explain(proc)
    m = load_manifest(bundle)
    assert m["data"]["evaluation"]["labelled"] is False
    assert m["baseline"]["metrics"]["top1"] is None
    baseline = run_batches(ort_session(bundle / "baseline" / "model.float.onnx"), digits16.x_eval)
    for t in ("rpi4", "x86-64"):
        a = artifact(m, t, "ort-int8")
        names = [v["gate"] for v in a["metrics"]["gates"]]
        assert "max_accuracy_drop" not in names
        v = _verdict(a, "min_sqnr_db")
        used = a["metrics"]["numerics"][a["metrics"]["gate_numerics"]]
        assert v["value"] == pytest.approx(used["sqnr_db"]) and v["threshold"] == 30.0
        assert v["passed"] is (v["value"] >= 30.0) is True
        assert used["top1"] is None
    # the x86-64 host number is what onnxruntime gives here
    int8 = run_batches(ort_session(bundle / "x86-64" / "model.int8.ort"), digits16.x_eval)
    host = artifact(m, "x86-64", "ort-int8")["metrics"]["numerics"]["host"]["sqnr_db"]
    assert host == pytest.approx(sqnr_db(baseline, int8), abs=0.5)


def test_unmet_sqnr_gate_fails(tmp_path, tiny_model, tiny_calib, local_profile):
    cfg = write_toml(tmp_path / "edgepack.toml", f"""
        name = "sqnr"
        out = "dist"
        targets = ["{local_profile}"]
        [model]
        onnx = "{tiny_model}"
        [data]
        calibration = "{tiny_calib}"
        [gates]
        min_sqnr_db = 200.0
        [verify]
        latency_runs = 2
    """)
    proc = cli("build", cfg)
    assert proc.returncode == 1, explain(proc)
    m = load_manifest(tmp_path / "dist" / "sqnr-0.1.0")
    assert m["status"] == "failed"
    assert m["data"]["evaluation"]["labelled"] is False and "optimistic" in m["data"]["evaluation"]["note"]
    v = _verdict(artifact(m, "edge-local", "ort-int8"), "min_sqnr_db")
    assert v["passed"] is False and v["value"] < 200
    assert any(f["gate"] == "min_sqnr_db" for f in m["failures"])
