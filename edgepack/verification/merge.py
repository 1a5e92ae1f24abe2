"""Fold a device runner's result (a real device or an emulated one) into a manifest.

`merge_device_result` is a pure function: manifest and result in, a new manifest out.
Nothing the device found is dropped:
- a file the device could not find or whose checksum differs, a golden input or output
  that does not reproduce, a runtime that is not installed, a gate the device saw fail:
  each becomes a failure of that artifact (or of the bundle), naming the device, the
  runtime and the reason;
- device-exact numbers become the numbers that artifact's accuracy gates read, and the
  gates are re-evaluated from them here (a verdict is computed, never copied);
- runs that are not device-exact are kept beside the host numbers for comparison.
The bundle's status is then derived from everything it holds (`Manifest.with_verdict`).
"""

from __future__ import annotations

from ..errors import BundleError
from ..manifest.models import (
    ArtifactEntry,
    DeviceArtifactResult,
    DeviceFailure,
    DeviceRecord,
    DeviceResult,
    DeviceRun,
    GateVerdict,
    Manifest,
    Problem,
)
from .gates import evaluate_gates
from .select import with_defaults

NOT_EXACT_NOTE = "not device-exact (the runtime version differs from the profile's pin, or the ISA differs)"


def describe_runner(result: DeviceResult) -> str:
    """Where a device result was measured, in words: the emulated CPU or the device's CPU."""
    if result.emulation:
        return f"emulated {result.emulation.get('cpu', '?')} under {result.emulation.get('qemu', 'qemu')}"
    runner = result.runner
    return f"{runner.get('cpu', 'device')} ({runner.get('arch', '?')})"


# What a device result must say about what produced it (edgepack.verification.device writes these).
RUNNER_KEYS = ("program", "cpu", "arch")


def provenance_problem(manifest: Manifest, result: DeviceResult) -> str | None:
    """Why `result` cannot be taken as a run of this bundle's files, or None: the runner or a
    runtime is not named, or the sha256 the runner recorded of a file it ran is not the
    bundle's. (Numbers can still be forged by whoever writes the JSON: a merged result is
    labelled unsigned.)"""
    runner = result.runner or {}
    missing = [k for k in RUNNER_KEYS if not runner.get(k)]
    if missing:
        return (f"it does not name the runner's {', '.join(missing)} (not written by edgepack's device runner, or by "
                "an older one: run `python -m edgepack.device verify` again)")
    if not result.targets:
        return None  # it ran nothing: its problems are merged as the bundle's failures
    if not result.checksums:
        return "it records no sha256 of the bundle files it ran (re-run the device runner of this edgepack version)"
    expected: dict[str, str] = {}
    if not result.problems:  # the shared files were checked (a problem there is merged as a failure)
        for f in (manifest.baseline, manifest.golden.inputs, manifest.golden.reference_outputs,
                  manifest.reference_data.eval, manifest.reference_data.eval_reference_outputs):
            expected[f.path] = f.sha256
    for tname, tres in result.targets.items():
        target = manifest.targets.get(tname)
        if target is None:
            continue  # merge_device_result names it
        entries = {a.kind: a for a in target.artifacts}
        for res in tres.artifacts:
            entry = entries.get(res.kind)
            if entry is None or res.error is not None:
                continue  # not run: its error is merged as a failure
            if not res.runtime or len(res.runtime.split()) < 2:
                return f"{tname}/{res.kind}: it does not name the runtime and its version that ran the artifact"
            expected[entry.path] = entry.sha256
            for f in [*entry.files, entry.reference_graph]:
                if f is not None:
                    expected[f.path] = f.sha256
    for path, digest in sorted(expected.items()):
        got = result.checksums.get(path)
        if got is None:
            return f"it records no sha256 of {path}, which it reports on"
        if got != digest:
            return (f"{path}: the sha256 it recorded ({got[:12]}…) is not the bundle's ({digest[:12]}…): "
                    "it ran other files")
    return None


def merge_device_result(manifest: Manifest, result: DeviceResult, *, merged_utc: str,
                        ratios: dict[tuple[str, str], dict] | None = None) -> Manifest:
    """A copy of `manifest` with `result` folded in (see the module doc). `ratios`: the size
    ratios measured from the bundle's files per (target, kind) (verification.sizes), which the
    re-evaluated size gates read instead of the manifest's.

    Raises BundleError when the result is of another bundle or names a target or artifact
    the bundle does not have."""
    expected = f"{manifest.name}-{manifest.version}"
    if result.bundle != expected:
        raise BundleError(f"device result is of bundle {result.bundle!r}, not {expected!r}")
    where = describe_runner(result)
    targets = dict(manifest.targets)
    exact_any = False
    reported_failure = bool(result.problems)
    for tname, tres in result.targets.items():
        target = targets.get(tname)
        if target is None:
            raise BundleError(f"device result names target {tname!r}, which the bundle does not have "
                              f"(has: {', '.join(targets)})")
        by_kind = {a.kind: i for i, a in enumerate(target.artifacts)}
        artifacts = list(target.artifacts)
        for res in tres.artifacts:
            if res.kind not in by_kind:
                raise BundleError(f"device result names artifact {tname}/{res.kind}, which the bundle does not have")
            i = by_kind[res.kind]
            merged, exact, failed = _merge_artifact(artifacts[i], res, where, target.gates.model_dump(),
                                                    manifest.baseline.metrics.model_dump(),
                                                    (ratios or {}).get((tname, res.kind)))
            artifacts[i] = merged
            exact_any |= exact
            reported_failure |= failed
        targets[tname] = target.model_copy(update={"artifacts": artifacts})
    if ratios:  # every artifact's size verdicts from what was measured now, device run or not
        for tname, target in list(targets.items()):
            gates = target.gates.model_dump()
            targets[tname] = target.model_copy(update={"artifacts": [
                _measured_sizes(a, gates, ratios[(tname, a.kind)]) if (tname, a.kind) in ratios else a
                for a in target.artifacts]})
    problems = list(result.problems)
    if not result.passed and not reported_failure:
        # The runner said "failed" but gave no reason we can attach: keep its word.
        problems.append(Problem(where="device run", reason="the device runner reported a failure without a reason"))
    record = DeviceRecord(merged_utc=merged_utc, where=where, runner=result.runner, emulation=result.emulation,
                          problems=problems, device_exact=exact_any, passed=result.passed)
    out = manifest.model_copy(update={"targets": targets, "device_results": [*manifest.device_results, record]})
    return with_defaults(out.with_verdict())


def _measured_sizes(entry: ArtifactEntry, gates: dict, ratios: dict) -> ArtifactEntry:
    """`entry` with its size-gate verdicts judged on `ratios` (measured from the files)."""
    from .sizes import MEASURED_NOTE, SIZE_GATES

    verdicts = evaluate_gates({g: gates.get(g) for g in SIZE_GATES}, metrics={}, baseline={},
                              precision=entry.precision, ratios=ratios, latency=None, latency_is_device=False)
    recorded = {v.gate: v for v in entry.metrics.gates if v.gate in SIZE_GATES}
    if len(recorded) == len(verdicts) and all(
            v["gate"] in recorded and recorded[v["gate"]].passed == v["passed"]
            and abs((recorded[v["gate"]].value or 0) - v["value"]) <= 1e-3 * max(abs(v["value"]), 1e-9)
            for v in verdicts):
        return entry  # the files say what the manifest says: left as it was
    for v in verdicts:
        v["note"] = f"{v['note']}; {MEASURED_NOTE}"
    kept = [v for v in entry.metrics.gates if v.gate not in SIZE_GATES]
    metrics = entry.metrics.model_copy(update={"gates": kept + [GateVerdict.model_validate(v) for v in verdicts]})
    return entry.model_copy(update={"metrics": metrics, **{k: v for k, v in ratios.items() if v is not None}})


def _merge_artifact(entry: ArtifactEntry, res: DeviceArtifactResult, where: str, gates: dict,
                    baseline: dict, measured: dict | None = None) -> tuple[ArtifactEntry, bool, bool]:
    """(merged entry, whether its numbers were device-exact, whether a failure was recorded)."""
    m = entry.metrics
    failures = list(m.device_failures)
    update: dict = {}
    fail = lambda reason: failures.append(DeviceFailure(where=where, runtime=res.runtime, reason=reason))  # noqa: E731
    exact = False
    if res.error is not None:
        fail(res.error)
    else:
        if res.golden_ok is False:
            sqnr = res.golden.sqnr_db if res.golden is not None else None
            fail("golden outputs differ from the float reference"
                 + (f" (SQNR {sqnr:.1f} dB)" if sqnr is not None else ""))
        numbers = (res.numerics or {}).get("device-exact") if res.gate_numerics == "device-exact" else None
        if numbers is not None:
            exact = True
            numbers = numbers.model_copy(update={"measured_on": where, "runtime": res.runtime,
                                                 "emulated": "emulated" in where})
            latency, latency_is_device = m.latency, m.host_is_target_isa
            if res.latency is not None and "emulated" not in where:
                latency = res.latency.model_copy(update={"measured_on": "device"})
                latency_is_device = True
                update["device_latency"] = latency
            verdicts = evaluate_gates(gates, metrics=numbers.model_dump(), baseline=baseline,
                                      precision=entry.precision,
                                      ratios=measured or {"size_ratio": entry.size_ratio,
                                                          "weight_ratio": entry.weight_ratio,
                                                          "int8_size_ratio": entry.int8_size_ratio},
                                      latency=latency.model_dump(), latency_is_device=latency_is_device)
            update.update(numerics={**m.numerics, "device-exact": numbers}, gate_numerics="device-exact",
                          gates=[GateVerdict.model_validate(v) for v in verdicts])
        else:
            update["device_runs"] = [*m.device_runs, DeviceRun(where=where, runtime=res.runtime,
                                                               numerics=res.numerics, note=NOT_EXACT_NOTE)]
            # Its gates read other numbers than the host's; a failure there is still a finding.
            for v in res.gates or []:
                if v.passed is False:
                    fail(f"{v.gate}: {v.metric} = {v.value} on its {res.gate_numerics} numbers "
                         f"(threshold {v.threshold})")
        if not res.passed and len(failures) == len(m.device_failures) \
                and not any(v.passed is False for v in update.get("gates", [])):
            fail("the device runner marked this artifact failed")
    update["device_failures"] = failures
    merged = entry.model_copy(update={"metrics": m.model_copy(update=update)})
    regated_fails = any(v.passed is False for v in update.get("gates", []))
    return merged, exact, len(failures) > len(m.device_failures) or regated_fails
