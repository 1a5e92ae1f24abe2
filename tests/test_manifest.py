"""The manifest contract: typed models, the shipped JSON Schemas, readers of other versions,
location-free identity, and the pure pieces around it (gates, report, staging)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import REPO, cli, explain, load_manifest

from edgepack.errors import BundleError
from edgepack.manifest import schema as schema_module
from edgepack.manifest.files import read_manifest
from edgepack.manifest.jsonio import MANIFEST_SCHEMA
from edgepack.report import render_report
from edgepack.stages.bundle import Staging
from edgepack.verification.device import verify_bundle
from edgepack.verification.gates import all_passed, evaluate_gates

SCHEMAS = Path(schema_module.__file__).parent


def _schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def test_shipped_schemas_are_generated_from_the_models():
    for name in schema_module.SCHEMA_FILES:
        assert (SCHEMAS / name).read_text() == schema_module.render(name), \
            f"{name} is stale: run python -m edgepack.manifest.schema"


def test_schema_check_command_fails_on_drift(tmp_path, monkeypatch):
    monkeypatch.setattr(schema_module, "HERE", tmp_path)
    assert schema_module.main(["--check"]) == 1  # no files there
    assert schema_module.main([]) == 0 and schema_module.main(["--check"]) == 0


def test_schemas_ship_in_the_wheel():
    text = (REPO / "pyproject.toml").read_text()
    assert 'packages = ["edgepack"]' in text  # hatch ships every file of the package, .json included
    for name in schema_module.SCHEMA_FILES:
        assert (REPO / "edgepack" / "manifest" / name).is_file()


def _walk_strings(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_strings(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_strings(v, f"{path}[{i}]")
    elif isinstance(obj, str):
        yield path, obj


@pytest.mark.parametrize("which", ["unseen_bundle", "unseen_unlabelled_bundle"])
def test_built_manifests_validate_against_the_shipped_schema(request, which):
    built = request.getfixturevalue(which)
    assert built.proc.returncode == 0, explain(built.proc)
    doc = load_manifest(built.bundle)
    jsonschema.validate(doc, _schema("manifest.schema.json"))
    assert doc["schema"] == MANIFEST_SCHEMA


def test_example_manifest_validates_and_holds_no_build_host_path(digits_example):
    doc = load_manifest(digits_example.bundle)
    jsonschema.validate(doc, _schema("manifest.schema.json"))
    leaks = [(p, s) for p, s in _walk_strings(doc) if str(REPO) in s or s.startswith("/") or "pytest-of" in s]
    assert leaks == []
    assert doc["config"]["data"]["calibration"] == "../../calibration/digits/calib.npz"
    assert doc["data"]["calibration"]["source"] == "../../calibration/digits/calib.npz"
    assert len(doc["data"]["calibration"]["sha256"]) == 64 and len(doc["source"]["sha256"]) == 64
    assert "out" not in doc["config"]


def test_device_results_validate_against_the_shipped_schema(unseen_bundle, tmp_path):
    out = tmp_path / "r.json"
    proc = cli("verify", unseen_bundle.bundle, "--target", "x86-64", "--runs", "2", "--json", out)
    assert proc.returncode == 0, explain(proc)
    jsonschema.validate(json.loads(out.read_text()), _schema("device-result.schema.json"))


def test_same_config_in_two_checkouts_gives_the_same_identity(tmp_path):
    """The example built from two copies of the repository at different paths."""
    hashes, configs = [], []
    for where in ("first/checkout", "second"):
        root = tmp_path / where
        for d in ("examples/digits", "calibration/digits"):
            shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
        from edgepack.config import load_config

        cfg = load_config(root / "examples" / "digits" / "edgepack.toml")
        hashes.append(cfg.config_hash())
        configs.append(cfg.portable_dump())
    assert hashes[0] == hashes[1] and configs[0] == configs[1]


def test_manifest_of_an_older_schema_is_refused_by_name(unseen_bundle, tmp_path):
    bundle = tmp_path / "old"
    shutil.copytree(unseen_bundle.bundle, bundle)
    doc = load_manifest(bundle)
    doc["schema"] = "edgepack.manifest/1"
    (bundle / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="edgepack 0.1.*rebuild"):
        read_manifest(bundle)
    with pytest.raises(BundleError, match="edgepack 0.1"):
        verify_bundle(bundle)
    proc = cli("verify", bundle, "--runs", "1")
    assert proc.returncode == 2 and "edgepack.manifest/1" in proc.stderr, explain(proc)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_manifest_with_a_bad_field_names_it(unseen_bundle, tmp_path):
    bundle = tmp_path / "bad"
    shutil.copytree(unseen_bundle.bundle, bundle)
    doc = load_manifest(bundle)
    doc["targets"]["rpi4"]["artifacts"][0]["size_ratio"] = "big"
    (bundle / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"targets\.rpi4\.artifacts\.0\.size_ratio"):
        read_manifest(bundle)


# ---------------------------------------------------------------------------------------
# Gates: pure functions of measured numbers

LABELLED = {"samples": 10, "top1": 90.0, "sqnr_db": 25.0}
BASE = {"samples": 10, "top1": 91.5}


def _gates(**over):
    g = {"max_accuracy_drop": 1.0, "min_sqnr_db": 30.0, "max_latency_ms": None, "max_weight_ratio": 0.3,
         "max_size_ratio": None}
    g.update(over)
    return g


def test_accuracy_drop_gate_with_labels_and_sqnr_without():
    (v,) = evaluate_gates(_gates(max_weight_ratio=None), metrics=LABELLED, baseline=BASE, precision="int8",
                          ratios=None, latency=None, latency_is_device=False)
    assert (v["gate"], v["metric"], v["direction"], v["value"], v["passed"]) == \
        ("max_accuracy_drop", "top1_drop", "lower", 1.5, False)
    (v,) = evaluate_gates(_gates(max_weight_ratio=None), metrics={**LABELLED, "top1": None},
                          baseline={"samples": 10, "top1": None}, precision="int8", ratios=None, latency=None,
                          latency_is_device=False)
    assert (v["gate"], v["direction"], v["passed"]) == ("min_sqnr_db", "higher", False)


def test_size_gates_judge_eight_bit_artifacts_only():
    ratios = {"weight_ratio": 0.31, "size_ratio": 0.5}
    for precision, expected in (("int8", [False]), ("dynamic-int8", [False]), ("float16", []), ("float32", [])):
        verdicts = evaluate_gates(_gates(), metrics=LABELLED, baseline={**BASE, "top1": 90.0}, precision=precision,
                                  ratios=ratios, latency=None, latency_is_device=False)
        assert [v["passed"] for v in verdicts if v["gate"] == "max_weight_ratio"] == expected, precision


def test_latency_gate_is_not_judged_off_the_device():
    latency = {"p50_ms": 5.0}
    (off,) = evaluate_gates(_gates(max_accuracy_drop=None, min_sqnr_db=None, max_weight_ratio=None,
                                   max_latency_ms=1.0), metrics=LABELLED, baseline=BASE, precision="int8",
                            ratios=None, latency=latency, latency_is_device=False)
    assert off["passed"] is None and "not judged" in off["note"]
    assert all_passed([off])
    (on,) = evaluate_gates(_gates(max_accuracy_drop=None, min_sqnr_db=None, max_weight_ratio=None,
                                  max_latency_ms=1.0), metrics=LABELLED, baseline=BASE, precision="int8",
                           ratios=None, latency=latency, latency_is_device=True)
    assert on["passed"] is False and not all_passed([on])


# ---------------------------------------------------------------------------------------
# Report rendering: a pure function of the manifest


def test_report_lists_every_failure_and_gate_direction(unseen_bundle):
    m = read_manifest(unseen_bundle.bundle)
    entry = m.targets["x86-64"].artifact("ort-int8")
    verdicts = [v.model_copy(update={"passed": False}) if v.gate == "max_accuracy_drop" else v
                for v in entry.metrics.gates]
    failing = entry.model_copy(update={"metrics": entry.metrics.model_copy(update={"gates": verdicts})})
    target = m.targets["x86-64"].model_copy(update={
        "artifacts": [failing if a.kind == "ort-int8" else a for a in m.targets["x86-64"].artifacts]})
    failed = m.model_copy(update={"targets": {**m.targets, "x86-64": target}}).with_verdict()
    text = render_report(failed)
    assert text.splitlines()[0].endswith("FAILED")
    (f,) = failed.failures
    assert f"- {f.text()}" in text and "x86-64/ort-int8" in f.text()
    assert "❌ max_accuracy_drop" in text and "(≤ 1.0)" in text
    assert render_report(m).splitlines()[0].endswith("PASSED") and "## Failures" not in render_report(m)


# ---------------------------------------------------------------------------------------
# Staging


def test_staging_commits_only_complete_bundles(tmp_path, digits_example):
    old = digits_example.bundle
    final = tmp_path / "out" / old.name
    with Staging(final) as st:
        shutil.copytree(old, st.path, dirs_exist_ok=True)
        assert not final.exists() and st.path.parent.name.startswith(f".{old.name}.staging-")
        st.commit()
    assert (final / "manifest.json").is_file() and not st.path.exists()
    before = (final / "manifest.json").read_bytes()

    with pytest.raises(RuntimeError), Staging(final) as st:  # replacing a whole bundle, then failing
        (st.path / "half.txt").write_text("x")
        raise RuntimeError("a stage failed")
    assert not st.path.exists()
    assert (final / "manifest.json").read_bytes() == before and not (final / "half.txt").exists()  # intact


def test_python_api_reads_results_by_name(digits_example):
    """The README's API example, run."""
    import edgepack

    check = edgepack.verify(digits_example.bundle, target="rpi4", artifacts=["ort-float", "ort-int8"], runs=2)
    assert check.passed and [a.kind for a in check.result.targets["rpi4"].artifacts] == ["ort-float", "ort-int8"]
    info = edgepack.inspect(digits_example.bundle / "rpi4" / "model.int8.tflite")
    assert info.weight_bytes == digits_example.manifest.targets["rpi4"].artifact("tflite-int8").weight_bytes
    assert sys.modules["edgepack.api"].build is edgepack.build
