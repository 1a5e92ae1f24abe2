"""Merge a device runner's result (emulated or from a real device) into a bundle manifest.

Device-exact accuracy numbers become the ones the accuracy gates read for that target;
host and reference numbers stay beside them so the difference is visible.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from .bundle import read_manifest, write_manifest
from .errors import BundleError
from .gates import all_passed, evaluate_gates


def merge_device_result(manifest: dict, result: dict) -> dict:
    """Update `manifest` in place with `result` (edgepack.device-result/1); returns it."""
    if result.get("schema") != "edgepack.device-result/1":
        raise BundleError(f"device result has schema {result.get('schema')!r}; expected 'edgepack.device-result/1'")
    runner = result.get("runner", {})
    emulation = result.get("emulation")
    where = (f"emulated {emulation['cpu']} under {emulation['qemu']}" if emulation
             else f"{runner.get('cpu', 'device')} ({runner.get('arch')})")
    exact_any = False
    for tname, tres in result.get("targets", {}).items():
        target = manifest["targets"].get(tname)
        if target is None:
            raise BundleError(f"device result names target {tname!r}, which the bundle does not have")
        by_kind = {a["kind"]: a for a in target["artifacts"]}
        for res in tres["artifacts"]:
            entry = by_kind.get(res["kind"])
            if entry is None:
                raise BundleError(f"device result names artifact {tname}/{res['kind']}, which the bundle does not have")
            metrics = entry["metrics"]
            if "error" in res:
                metrics["device_error"] = {"where": where, "error": res["error"]}
                metrics["passed"] = False
                continue
            label = res.get("gate_numerics")
            if label != "device-exact":
                metrics.setdefault("device_runs", []).append({"where": where, "numerics": res.get("numerics"),
                                                              "note": "not device-exact (runtime version differs "
                                                                      "from the profile's pin or ISA differs)"})
                continue
            exact_any = True
            numbers = dict(res["numerics"]["device-exact"])
            numbers.update({"measured_on": where, "runtime": res.get("runtime"), "emulated": bool(emulation)})
            metrics["numerics"]["device-exact"] = numbers
            metrics["gate_numerics"] = "device-exact"
            latency, latency_is_device = metrics["latency"], metrics.get("host_is_target_isa", False)
            if res.get("latency") and not emulation:
                latency, latency_is_device = {**res["latency"], "measured_on": "device"}, True
                metrics["device_latency"] = latency
            metrics["gates"] = evaluate_gates(target["gates"], metrics=numbers, baseline=manifest["baseline"]["metrics"],
                                              precision=entry["precision"], ratios=entry,
                                              latency=latency, latency_is_device=latency_is_device)
            metrics["passed"] = all_passed(metrics["gates"])
        target["passed"] = all(a["metrics"]["passed"] for a in target["artifacts"])
    failures = []
    for tname, t in manifest["targets"].items():
        for a in t["artifacts"]:
            m = a["metrics"]
            failures += [f"{tname}/{a['kind']}: {v['gate']} = {v['value']} (threshold {v['threshold']})"
                         for v in m["gates"] if v["passed"] is False]
            if "device_error" in m:
                failures.append(f"{tname}/{a['kind']}: on {m['device_error']['where']}: {m['device_error']['error']}")
    manifest["failures"] = failures
    manifest["gates_passed"] = not failures
    manifest["status"] = "passed" if not failures else "failed"
    manifest.setdefault("device_results", []).append({
        "merged_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "where": where, "runner": runner, "emulation": emulation, "problems": result.get("problems", []),
        "device_exact": exact_any,
    })
    return manifest


def merge_into_bundle(bundle: Path, result: dict) -> dict:
    """Merge a device result into a bundle's manifest.json and re-render its report.md."""
    from .report import render_report

    bundle = Path(bundle)
    manifest = merge_device_result(read_manifest(bundle), result)
    write_manifest(manifest, bundle)
    (bundle / "report.md").write_text(render_report(manifest))
    return manifest
