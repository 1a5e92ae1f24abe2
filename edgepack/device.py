"""The device runner: re-verify a release bundle from its own files.

Runs anywhere the bundle's runtime runs — a Raspberry Pi with only numpy and
onnxruntime (or tflite-runtime / ai-edge-litert) installed, an emulated arm64 userland,
or the build host:

    python -m edgepack.device verify dist/model-1.0 --target rpi4 --json result.json

It checks every file's sha256 against the manifest, runs the golden inputs and the
bundled evaluation data through each artifact, compares with the float reference outputs
stored in the bundle, measures latency with the profile's threads, re-applies the
manifest's gates, and returns (or writes) a JSON result the host can merge into its report.
Imports: stdlib, numpy, and the runtime an artifact needs — nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from .bundle import _json_safe, read_manifest, sha256_file
from .errors import BundleError, EdgepackError
from .gates import all_passed, evaluate_gates
from .hostinfo import host_info, usable_cores
from .metrics import measure_latency, output_metrics, run_all
from .runtimes import RuntimeUnavailable, open_artifact, reference_session

RESULT_SCHEMA = "edgepack.device-result/1"
# Float artifacts must reproduce the float reference outputs closely on any CPU.
FLOAT_GOLDEN_MIN_SQNR_DB = 40.0


def _check_file(root: Path, entry: dict | None, problems: list[str]) -> bool:
    if not entry:
        return True
    path = root / entry["path"]
    if not path.is_file():
        problems.append(f"{entry['path']}: missing")
        return False
    if path.stat().st_size != entry["size_bytes"] or sha256_file(path) != entry["sha256"]:
        problems.append(f"{entry['path']}: checksum mismatch (sha256 differs from manifest)")
        return False
    return True


def _numerics_label(profile: dict, runtime: str, runtime_version: str, host: dict) -> str:
    """"device-exact" only when this machine has the target's ISA *and* runs the runtime
    version the profile pins for the device; anything else is "host"."""
    if host["arch"] != profile["cpu"]["arch"]:
        return "host"
    pin_key = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert", "tflite_runtime": "tflite_runtime"}.get(runtime)
    pinned = (profile.get("device_runtime") or {}).get(pin_key) if pin_key else None
    return "device-exact" if pinned and pinned == runtime_version else "host"


def verify_bundle(bundle: Path | str, target: str | None = None, *, threads: int | None = None,
                  warmup: int = 5, runs: int = 50) -> dict:
    """Verify a bundle's artifacts; returns a JSON-ready result with `passed`."""
    root = Path(bundle)
    manifest = read_manifest(root)
    targets = manifest["targets"]
    if target is not None and target not in targets:
        raise BundleError(f"{root}: target {target!r} is not in this bundle (has: {', '.join(targets)})")
    problems: list[str] = []
    shared_ok = all([
        _check_file(root, manifest["baseline"], problems),
        _check_file(root, manifest["golden"]["inputs"], problems),
        _check_file(root, manifest["golden"]["reference_outputs"], problems),
        _check_file(root, manifest["reference_data"]["eval"], problems),
        _check_file(root, manifest["reference_data"]["eval_reference_outputs"], problems),
    ])
    host = host_info()
    emulated = os.environ.get("EDGEPACK_EMULATED_CPU")
    result = {"schema": RESULT_SCHEMA, "bundle": manifest["name"] + "-" + manifest["version"],
              "runner": {**host, "emulated_cpu": emulated}, "targets": {}, "problems": problems}
    if not shared_ok:
        result["passed"] = False
        return result

    batch = manifest["model"]["batch"]
    golden_x = np.load(root / manifest["golden"]["inputs"]["path"])
    with np.load(root / manifest["golden"]["reference_outputs"]["path"]) as z:
        golden_ref = z["arr_0"]
    with np.load(root / manifest["reference_data"]["eval"]["path"]) as z:
        x, y = z["x"], (z["y"] if "y" in z.files else None)
    with np.load(root / manifest["reference_data"]["eval_reference_outputs"]["path"]) as z:
        ref = z["arr_0"]
    baseline = output_metrics(ref, ref, y)

    for tname, t in targets.items():
        if target is not None and tname != target:
            continue
        profile = t["profile"]
        n_threads = min(threads or profile["threads"], usable_cores())
        tres = {"artifacts": []}
        for a in t["artifacts"]:
            ares = {"kind": a["kind"], "path": a["path"]}
            files_ok = all([_check_file(root, f, problems) for f in [a, *a["files"], a.get("reference_graph")]])
            if not files_ok:
                ares.update(passed=False, error="checksum")
                tres["artifacts"].append(ares)
                continue
            try:
                session = open_artifact(root / a["path"], n_threads, a.get("layout"))
            except RuntimeUnavailable as exc:
                problems.append(str(exc))
                ares.update(passed=False, error=f"runtime unavailable: {exc}")
                tres["artifacts"].append(ares)
                continue
            label = _numerics_label(profile, session.runtime, session.version, host)
            same_isa = host["arch"] == profile["cpu"]["arch"]
            golden = output_metrics(golden_ref, run_all(session, golden_x, batch)[0], None)
            golden_ok = a["precision"] != "float32" or golden["sqnr_db"] >= FLOAT_GOLDEN_MIN_SQNR_DB
            if not golden_ok:
                problems.append(f"{a['path']}: golden outputs differ from the float reference "
                                f"(SQNR {golden['sqnr_db']:.1f} dB < {FLOAT_GOLDEN_MIN_SQNR_DB} dB)")
            numerics = {label: output_metrics(ref, run_all(session, x, batch)[0], y)}
            gate_numerics = label
            ref_graph = a.get("reference_graph")
            if not same_isa and a["precision"] != "float32":
                # This machine's kernels are not the device's: judge on the reference numerics.
                try:
                    ref_session = reference_session(root / a["path"], a["precision"], a["runtime"], a.get("layout"),
                                                    root / ref_graph["path"] if ref_graph else None)
                    if ref_session is not None:
                        numerics["reference"] = output_metrics(ref, run_all(ref_session, x, batch)[0], y)
                        gate_numerics = "reference"
                except RuntimeUnavailable:
                    pass  # e.g. a TFLite-only device without onnxruntime
            metrics = numerics[gate_numerics]
            latency = None
            if not emulated:  # emulated time says nothing about the device
                latency = measure_latency(session, x[:batch], warmup, runs)
                latency.update({"measured_on": label, "cpu": host["cpu"], "arch": host["arch"]})
            # size and weight ratios were measured at build time on these checksummed files
            verdicts = evaluate_gates(t["gates"], metrics=metrics, baseline=baseline, precision=a["precision"],
                                      ratios=a, latency=latency,
                                      latency_is_device=label == "device-exact" and not emulated)
            ares.update({
                "numerics": numerics,
                "gate_numerics": gate_numerics,
                "runtime": f"{session.runtime} {session.version}",
                "golden": golden,
                "metrics": metrics,
                "baseline": baseline,
                "latency": latency,
                "gates": verdicts,
                "passed": golden_ok and all_passed(verdicts),
            })
            tres["artifacts"].append(ares)
        tres["passed"] = all(a["passed"] for a in tres["artifacts"])
        result["targets"][tname] = tres
    result["passed"] = not problems and all(t["passed"] for t in result["targets"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgepack.device", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="verify a bundle's artifacts on this machine")
    v.add_argument("bundle", type=Path)
    v.add_argument("--target")
    v.add_argument("--threads", type=int)
    v.add_argument("--runs", type=int, default=50)
    v.add_argument("--warmup", type=int, default=5)
    v.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    try:
        result = verify_bundle(args.bundle, args.target, threads=args.threads, warmup=args.warmup, runs=args.runs)
    except EdgepackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(_json_safe(result), indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    for p in result["problems"]:
        print(f"FAIL {p}")
    for tname, t in result["targets"].items():
        for a in t["artifacts"]:
            m = a.get("metrics") or {}
            acc = f" top-1 {m['top1']:.2f}%" if "top1" in m else ""
            print(f"{'PASS' if a['passed'] else 'FAIL'} {tname}/{a['kind']} ({a.get('gate_numerics', '-')}){acc}"
                  + (f" SQNR {m['sqnr_db']:.1f} dB" if m else ""))
    print("verified" if result["passed"] else "verification FAILED")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
