"""The embedded example (examples/digits), built through the Python API into a temp dir."""

from __future__ import annotations

import re

import pytest
from conftest import foreign_isa_target, same_isa_target


@pytest.fixture(scope="module")
def result(digits_example):
    return digits_example


def test_example_builds_and_passes(result, tmp_path_factory):
    assert result.passed is True and result.exit_code == 0, [f.text() for f in result.failures]
    assert result.bundle.name == "digits-cnn-1.0.0"
    assert result.bundle.is_dir() and (result.bundle / "manifest.json").is_file()
    assert "pytest" in str(result.bundle)  # went to the redirected out, not the repo's dist/
    m = result.manifest
    assert m.status == "passed" and set(m.targets) == {"rpi4", "rpi5", "android-arm64", "x86-64"}
    assert m.source.kind == "torch" and m.tools["torch"]
    assert m.source.path == "model.py:build" and len(m.source.sha256) == 64


def test_example_float_accuracy_matches_provenance(result):
    """calibration/digits/PROVENANCE.md states 98.75 % (395/400) for the float model."""
    b = result.manifest.baseline.metrics
    assert b.samples == 400
    assert b.top1 == pytest.approx(98.75, abs=0.5)


def test_example_report_mentions_whose_numbers(result):
    report = (result.bundle / "report.md").read_text()
    m = result.manifest
    assert report.startswith("# digits-cnn 1.0.0 — PASSED")
    assert "**host**" in report and "**reference**" in report
    assert re.search(r"\| reference \(gated\) \|", report), "foreign-ISA targets gate on reference numerics"
    assert re.search(r"\| host \(gated\) \|", report), "same-ISA targets gate on host numerics"
    assert f"{m.baseline.metrics.top1:.2f}" in report
    for t in m.targets:
        assert f"## Target `{t}`" in report


def test_example_gate_numerics(result):
    m = result.manifest
    assert m.targets[foreign_isa_target()].artifact("ort-int8").metrics.gate_numerics == "reference"
    assert m.targets[same_isa_target()].artifact("ort-int8").metrics.gate_numerics == "host"
    # the example uses the profiles' gates: its int8 weights sit at the theoretical int8 size
    # although graph structure keeps its int8 .ort file above 0.3x float (24.5 k parameters)
    floor = m.model.int8_floor_bytes
    for _name, t in m.targets.items():
        assert t.gates.max_int8_size_ratio == 1.25 and t.gates.max_weight_ratio is None
        a = t.artifact("ort-int8")
        assert a.int8_size_ratio == pytest.approx(a.weight_bytes / floor["onnxruntime"])
        assert 0.9 <= a.int8_size_ratio <= 1.1
        assert a.size_ratio > 0.3
        verdicts = [g for g in a.metrics.gates if g.gate == "max_int8_size_ratio"]
        assert [(g.passed, g.metric, g.direction) for g in verdicts] == [(True, "int8_size_ratio", "lower")]


def test_example_bundle_verifies_in_process(result):
    from edgepack.verification.device import verify_bundle

    r = verify_bundle(result.bundle, runs=3, warmup=1)
    assert r["passed"] is True, r["problems"]
    assert set(r["targets"]) == set(result.manifest.targets)
    assert all(a["passed"] for t in r["targets"].values() for a in t["artifacts"])
