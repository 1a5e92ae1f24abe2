"""Merging device results: every failure a device reports survives into the manifest and
report, device-exact numbers are re-gated, and nothing else is touched.

The device results are real runner output (`verify_bundle` on this host) with the one
field a failure path changes, so each test differs from a passing merge by one finding.
"""

from __future__ import annotations

import copy

import pytest

from edgepack.errors import BundleError
from edgepack.manifest.files import parse_device_result, read_manifest
from edgepack.report import render_report
from edgepack.verification.device import verify_bundle
from edgepack.verification.merge import merge_device_result

NOW = "2026-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def passing(unseen_bundle):
    """The unseen CNN's manifest (it passes) and a real device result of its x86-64 target."""
    assert unseen_bundle.proc.returncode == 0, unseen_bundle.proc.stderr
    manifest = read_manifest(unseen_bundle.bundle)
    result = verify_bundle(unseen_bundle.bundle, "x86-64", runs=3, warmup=1)
    assert manifest.gates_passed and result["passed"]
    return manifest, result


def merged(manifest, doc):
    return merge_device_result(manifest, parse_device_result(copy.deepcopy(doc), "test"), merged_utc=NOW)


def artifact_result(doc, kind):
    (a,) = [a for a in doc["targets"]["x86-64"]["artifacts"] if a["kind"] == kind]
    return a


def test_a_passing_device_run_keeps_the_bundle_passed(passing):
    manifest, doc = passing
    out = merged(manifest, doc)
    assert out.status == "passed" and out.failures == []
    assert out.device_results[-1].passed and out.device_results[-1].merged_utc == NOW
    # a host-labelled run is kept beside the host numbers, not gated
    entry = out.targets["x86-64"].artifact("ort-int8")
    assert entry.metrics.device_runs and "device-exact" not in entry.metrics.numerics


def test_tampered_golden_input_fails_the_bundle(passing):
    manifest, doc = passing
    doc = copy.deepcopy(doc)
    doc.update(passed=False, targets={},
               problems=[{"where": "golden/inputs.npz", "reason": "checksum mismatch (sha256 differs from manifest)"}])
    out = merged(manifest, doc)
    assert out.status == "failed" and not out.gates_passed
    (f,) = out.failures
    assert f.source == "device" and "golden/inputs.npz" in f.reason and "checksum" in f.reason
    assert "golden/inputs.npz: checksum mismatch" in render_report(out)
    assert "FAILED" in render_report(out).splitlines()[0]


def test_float_golden_mismatch_fails_that_artifact(passing):
    manifest, doc = passing
    doc = copy.deepcopy(doc)
    a = artifact_result(doc, "ort-float")
    a.update(golden_ok=False, passed=False)
    a["golden"]["sqnr_db"] = 12.5
    doc["targets"]["x86-64"]["passed"] = doc["passed"] = False
    out = merged(manifest, doc)
    (f,) = out.failures
    assert (f.target, f.artifact, f.source) == ("x86-64", "ort-float", "device")
    assert "golden outputs differ" in f.reason and "12.5" in f.reason
    assert f.runtime and f.runtime.startswith("onnxruntime")
    assert not out.targets["x86-64"].artifact("ort-float").metrics.passed
    assert out.targets["x86-64"].artifact("ort-int8").metrics.passed
    assert not out.targets["x86-64"].passed and out.targets["rpi4"].passed
    assert "golden outputs differ" in render_report(out)


@pytest.mark.parametrize("error", ["runtime unavailable: needs onnxruntime, which is not installed",
                                   "x86-64/model.int8.ort: checksum mismatch (sha256 differs from manifest)"])
def test_artifact_errors_become_failures(passing, error):
    manifest, doc = passing
    doc = copy.deepcopy(doc)
    (a,) = [a for a in doc["targets"]["x86-64"]["artifacts"] if a["kind"] == "ort-int8"]
    for k in list(a):
        if k not in ("kind", "path"):
            del a[k]
    a.update(passed=False, error=error)
    doc["passed"] = False
    out = merged(manifest, doc)
    (f,) = out.failures
    assert f.artifact == "ort-int8" and f.reason == error and f.where


def test_failed_gate_on_the_device_is_kept(passing):
    manifest, doc = passing
    doc = copy.deepcopy(doc)
    a = artifact_result(doc, "ort-int8")
    a["gates"][0].update(passed=False, value=7.5)
    a["passed"] = doc["passed"] = False
    out = merged(manifest, doc)
    (f,) = out.failures
    assert f.source == "device" and a["gates"][0]["gate"] in f.reason and "7.5" in f.reason


def test_device_exact_numbers_are_regated(passing):
    manifest, doc = passing
    doc = copy.deepcopy(doc)
    a = artifact_result(doc, "ort-int8")
    numbers = a["numerics"].pop("host")
    numbers["top1"] = manifest.baseline.metrics.top1 - 5.0  # 5 points below float: the 1-point gate fails
    a.update(numerics={"device-exact": numbers}, gate_numerics="device-exact", metrics=numbers)
    out = merged(manifest, doc)
    entry = out.targets["x86-64"].artifact("ort-int8")
    assert entry.metrics.gate_numerics == "device-exact"
    assert entry.metrics.numerics["device-exact"].top1 == pytest.approx(numbers["top1"])
    (f,) = out.failures
    assert (f.source, f.gate, f.artifact) == ("gate", "max_accuracy_drop", "ort-int8")
    assert out.device_results[-1].device_exact


def test_device_exact_numbers_that_hold_pass(passing):
    manifest, doc = passing
    doc = copy.deepcopy(doc)
    a = artifact_result(doc, "ort-int8")
    numbers = a["numerics"].pop("host")
    a.update(numerics={"device-exact": numbers}, gate_numerics="device-exact", metrics=numbers)
    out = merged(manifest, doc)
    assert out.status == "passed"
    assert out.targets["x86-64"].artifact("ort-int8").metrics.gate_numerics == "device-exact"


def test_a_failure_without_a_reason_is_not_lost(passing):
    manifest, doc = passing
    doc = copy.deepcopy(doc)
    doc["passed"] = False
    out = merged(manifest, doc)
    assert out.status == "failed"
    assert any("without a reason" in f.reason for f in out.failures)


def test_merge_is_pure(passing):
    manifest, doc = passing
    before = manifest.model_dump()
    bad = copy.deepcopy(doc)
    bad["passed"] = False
    merged(manifest, bad)
    assert manifest.model_dump() == before


def test_failures_accumulate_over_merges(passing):
    manifest, doc = passing
    bad = copy.deepcopy(doc)
    bad.update(passed=False, targets={}, problems=[{"where": "data/eval.npz", "reason": "missing"}])
    once = merged(manifest, bad)
    twice = merged(once, doc)  # a later passing run does not erase the earlier finding
    assert twice.status == "failed" and len(twice.device_results) == 2
    assert any("data/eval.npz" in f.reason for f in twice.failures)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(bundle="someone-else-1.0"), "someone-else-1.0"),
    (lambda d: d["targets"].update(mystery=d["targets"]["x86-64"]), "mystery"),
    (lambda d: d["targets"]["x86-64"]["artifacts"][0].update(kind="ort-fp8"), "ort-fp8"),
])
def test_results_that_do_not_fit_the_bundle_are_refused(passing, change, words):
    manifest, doc = passing
    doc = copy.deepcopy(doc)
    change(doc)
    with pytest.raises(BundleError, match=words):
        merged(manifest, doc)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(schema="edgepack.device-result/1"), "edgepack 0.1"),
    (lambda d: d.update(schema="edgepack.device-result/9"), "newer"),
    (lambda d: d.pop("targets"), "targets"),
    (lambda d: d.update(problems={"a": 1}), "problems"),
    (lambda d: d["targets"]["x86-64"]["artifacts"][0].update(path="../../etc/passwd"), "inside the bundle"),
])
def test_malformed_device_results_are_refused_by_name(passing, change, words):
    _, doc = passing
    doc = copy.deepcopy(doc)
    change(doc)
    with pytest.raises(BundleError, match=words):
        parse_device_result(doc, "result.json")
