"""Compression inside `edgepack build`: the [compress] section and the CLI flags, the manifest's
compression record, the report's compression table, and bundles that still verify."""

from __future__ import annotations

import json

import onnx
import pytest
from conftest import REPO, cli, explain, load_manifest

from edgepack.stages.graph import parameter_count

DIGITS = REPO / "examples" / "digits" / "model.py"
CALIB = REPO / "calibration" / "digits" / "calib.npz"
EVAL = REPO / "calibration" / "digits" / "eval.npz"


@pytest.fixture(scope="module")
def pruned_digits(tmp_path_factory):
    """The embedded example, 50 % of channels pruned and weakly distilled, through the Python API."""
    from edgepack.config import config_from_dict
    from edgepack.pipeline import build

    out = tmp_path_factory.mktemp("pruned_digits")
    cfg = config_from_dict({
        "name": "digits-pruned", "out": str(out), "targets": ["x86-64"],
        "model": {"torch": f"{DIGITS}:build", "input_shape": [1, 1, 8, 8]},
        "data": {"calibration": str(CALIB), "evaluation": str(EVAL)},
        "verify": {"latency_runs": 10, "warmup_runs": 2},
        "compress": {"prune": {"ratio": 0.5, "criterion": "l1", "random_trials": 2},
                     "distill": {"epochs": 25, "mode": "weak"}},
    })
    return build(cfg)


def test_manifest_records_measured_effects(pruned_digits):
    m = pruned_digits.manifest.to_json()
    c = m["compression"]
    assert c["order"] == ["prune", "distill"]
    assert c["prune"]["criterion"] == "l1" and c["prune"]["round_to"] == 8  # the x86-64 profile's round_to
    assert c["before"]["parameters"] == 24_522 and c["after"]["parameters"] < 24_522 / 3
    assert c["ratios"]["macs"] > 3
    un, co = c["float_unpruned"], c["float_compressed"]
    assert un["metrics"]["top1"] == pytest.approx(98.75)  # the shipped example, in ONNX Runtime
    # the compressed graph is the baseline
    assert co["metrics"]["top1"] == pytest.approx(m["baseline"]["metrics"]["top1"])
    assert co["metrics"]["top1"] == pytest.approx(c["after"]["quality"]["top1"], abs=0.5)  # torch and ORT agree
    assert co["size_bytes"] < un["size_bytes"] and co["zlib_bytes"] < un["zlib_bytes"]
    assert un["threads"] == co["threads"] == c["threads"]
    assert un["latency_p50_ms"] > 0 and co["latency_p50_ms"] > 0
    assert c["distill"]["after"]["top1"] > c["prune"]["after_pruning"]["top1"] + 20
    rb = c["prune"]["random_baseline"]
    assert rb["trials"] == 2 and c["prune"]["beats_random"] == (c["prune"]["after_pruning"]["value"] > rb["value"])
    # the bundled float model is the compressed one
    baseline = onnx.load(str(pruned_digits.bundle / m["baseline"]["path"]))
    assert parameter_count(baseline) < 24_522 / 3
    assert m["config"]["compress"]["prune"]["ratio"] == 0.5


def test_int8_artifacts_of_the_compressed_model_pass_the_gates(pruned_digits):
    assert pruned_digits.passed, [f.text() for f in pruned_digits.failures]
    kinds = {a.kind for a in pruned_digits.manifest.targets["x86-64"].artifacts}
    assert kinds == {"ort-float", "ort-int8"}


def test_report_has_the_compression_table(pruned_digits):
    text = (pruned_digits.bundle / "report.md").read_text()
    section = text.split("## Compression", 1)[1].split("## Target", 1)[0]
    assert "| float, unpruned | 24.52 k |" in section
    assert "| float, compressed |" in section and "× fewer" in section and "× smaller" in section
    assert "| x86-64 `ort-int8` |" in section and "| x86-64 `ort-float` |" in section
    assert "criterion `l1`" in section and "random importance" in section
    p = load_manifest(pruned_digits.bundle)["compression"]["prune"]
    verdict = "**beats random" if p["beats_random"] else "**does NOT beat random**"
    assert verdict in section, section
    assert "Distillation (weak)" in section


def test_bundle_of_a_compressed_model_verifies(pruned_digits):
    from edgepack.verification.device import verify_bundle

    result = verify_bundle(pruned_digits.bundle, runs=3)
    assert result["passed"], result["problems"]


def test_cli_flags_fine_grained_pruning_reports_no_speed_up(tmp_path, local_profile):
    proc = cli("build", "--torch", f"{DIGITS}:build", "--input-shape", "1,1,8,8", "--calib", CALIB, "--eval", EVAL,
               "--targets", local_profile, "--out", tmp_path, "--name", "fine", "--latency-runs", "5",
               "--prune", "0.5", "--prune-criterion", "l2", "--prune-granularity", "fine", "--json")
    m = json.loads(proc.stdout)
    assert proc.returncode == (0 if m["status"] == "passed" else 1), explain(proc)
    assert (m["status"] == "passed") == (not m["failures"])
    c = m["compression"]
    assert c["prune"]["granularity"] == "fine" and c["prune"]["speeds_up_dense_runtimes"] is False
    assert c["after"]["macs"] == c["before"]["macs"] and c["after"]["parameters"] == c["before"]["parameters"]
    assert c["after"]["zero_fraction"] == pytest.approx(0.5, abs=0.01)
    assert c["float_compressed"]["zlib_bytes"] < c["float_unpruned"]["zlib_bytes"]
    assert c["float_compressed"]["size_bytes"] == pytest.approx(c["float_unpruned"]["size_bytes"], rel=0.02)
    text = (tmp_path / "fine-0.1.0" / "report.md").read_text()
    assert "**Fine-grained pruning does not speed up dense runtimes**" in text
    assert load_manifest(tmp_path / "fine-0.1.0") == m
