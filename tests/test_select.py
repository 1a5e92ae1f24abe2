"""Each target's default artifact: the fastest one that passes its gates, and why.

The selection is checked on a real bundle (the unseen CNN built for two targets), then on
copies of its target entries whose measured latencies and verdicts are changed, so every
branch (int8 slower than float, fastest one failing, nothing passing, a device's own
latency) is exercised on real manifest records.
"""

from __future__ import annotations

import pytest
from conftest import same_isa_target

from edgepack.manifest.files import read_manifest
from edgepack.verification.select import SAME_SPEED, choose_default


def _p50(a, target=None) -> float:
    """The latency the choice ranks by: a quantised artifact measured in alternating runs with
    its float one counts as the float p50 times that ratio."""
    h = a.metrics.head_to_head
    if target is not None and h is not None and a.metrics.device_latency is None:
        return _p50(target.artifact(h.against)) * h.ratio
    return (a.metrics.device_latency or a.metrics.latency).p50_ms


def _with(target, kind, *, p50=None, passed=None, device_p50=None):
    """A copy of `target` with one artifact's p50 latency and/or verdict replaced."""
    arts = []
    for a in target.artifacts:
        if a.kind == kind:
            mt = a.metrics
            upd = {}
            if p50 is not None:  # a latency measured on its own (no alternating runs with float)
                upd["latency"] = mt.latency.model_copy(update={"p50_ms": p50})
                upd["head_to_head"] = None
            if device_p50 is not None:
                upd["device_latency"] = mt.latency.model_copy(update={"p50_ms": device_p50, "measured_on": "device"})
            if passed is not None:
                upd["passed"] = passed
                upd["gates"] = [g.model_copy(update={"passed": passed}) if i == 0 else g
                                for i, g in enumerate(mt.gates)]
            a = a.model_copy(update={"metrics": mt.model_copy(update=upd)})
        arts.append(a)
    return target.model_copy(update={"artifacts": arts})


@pytest.fixture(scope="module")
def manifest(unseen_bundle):
    assert unseen_bundle.proc.returncode in (0, 1), unseen_bundle.proc.stderr
    return read_manifest(unseen_bundle.bundle)


def test_every_target_ships_its_fastest_passing_artifact(manifest, unseen_bundle):
    report = (unseen_bundle.bundle / "report.md").read_text()
    for name, t in manifest.targets.items():
        d = t.default
        assert d is not None
        passing = [a for a in t.artifacts if a.metrics.passed]
        if not passing:
            assert d.kind is None
            continue
        chosen = t.artifact(d.kind)
        assert chosen.metrics.passed and d.path == chosen.path
        # nothing passing is clearly faster (a quantised one must beat its float one by SAME_SPEED)
        assert all(_p50(a, t) >= _p50(chosen, t) * (1 - SAME_SPEED) for a in passing), name
        assert f"Default artifact: `{chosen.path}` ({d.kind})" in report
        assert (unseen_bundle.bundle / chosen.path).is_file()
    assert "★ default" in unseen_bundle.proc.stdout


def test_basis_says_whose_latency_ranked_them(manifest):
    same = manifest.targets[same_isa_target()].default
    assert "this host has the target's ISA" in same.basis
    other = next(t for n, t in manifest.targets.items() if n != same_isa_target()).default
    assert "not the target's ISA" in other.basis


@pytest.fixture(scope="module")
def x86(manifest):
    return manifest.targets[same_isa_target()]


def test_slower_int8_loses_to_float_with_the_numbers(x86):
    f = _p50(x86.artifact("ort-float"))
    t = _with(x86, "ort-int8", p50=f * 1.5, passed=True)
    t = _with(t, "ort-float", passed=True)
    d = choose_default(t)
    assert d.kind == "ort-float"
    (note,) = [n for n in d.notes if n.startswith("ort-int8")]
    assert "not faster than ort-float" in note and "1.50x" in note


def test_int8_within_noise_of_float_ships_float(x86):
    f = _p50(x86.artifact("ort-float"))
    t = _with(_with(x86, "ort-int8", p50=f * (1 - SAME_SPEED / 2), passed=True), "ort-float", passed=True)
    assert choose_default(t).kind == "ort-float"
    t = _with(_with(x86, "ort-int8", p50=f * 0.5, passed=True), "ort-float", passed=True)
    d = choose_default(t)
    assert d.kind == "ort-int8" and not d.notes and d.per_runtime == {"onnxruntime": "ort-int8"}


def test_a_faster_failing_artifact_is_named_not_shipped(x86):
    f = _p50(x86.artifact("ort-float"))
    t = _with(_with(x86, "ort-int8", p50=f * 0.2, passed=False), "ort-float", passed=True)
    d = choose_default(t)
    assert d.kind == "ort-float"
    assert "faster but failing: ort-int8" in d.reason


def test_nothing_passing_ships_nothing(x86):
    t = x86
    for a in x86.artifacts:
        t = _with(t, a.kind, passed=False)
    d = choose_default(t)
    assert d.kind is None and d.path is None and "no artifact passes" in d.reason


def test_device_latency_decides_when_every_artifact_has_one(x86):
    f = _p50(x86.artifact("ort-float"))
    t = _with(_with(x86, "ort-int8", p50=f * 0.1, device_p50=f * 3, passed=True), "ort-float", passed=True,
              device_p50=f)
    d = choose_default(t)
    assert d.kind == "ort-float" and d.basis == "device latency p50"


def test_alternating_runs_decide_over_two_separate_p50s(x86):
    """int8 measured at half the float p50 on its own, but 1.6x float in runs alternating with
    it (the host's load changed between the two measurements): float is the default and the
    note gives the alternating ratio. The real build recorded such a measurement."""
    int8 = x86.artifact("ort-int8")
    assert int8.metrics.head_to_head is not None and int8.metrics.head_to_head.against == "ort-float"
    assert int8.metrics.head_to_head.rounds >= 5 and int8.metrics.head_to_head.ratio > 0
    f = _p50(x86.artifact("ort-float"))
    t = _with(_with(x86, "ort-int8", p50=f * 0.5, passed=True), "ort-float", passed=True)
    h = int8.metrics.head_to_head.model_copy(update={"ratio": 1.6})
    arts = [a.model_copy(update={"metrics": a.metrics.model_copy(update={"head_to_head": h})})
            if a.kind == "ort-int8" else a for a in t.artifacts]
    d = choose_default(t.model_copy(update={"artifacts": arts}))
    assert d.kind == "ort-float" and "alternating" in d.basis
    (note,) = [n for n in d.notes if n.startswith("ort-int8")]
    assert "1.60x" in note
