"""The device runner: re-verify a release bundle from its own files.

Runs anywhere the bundle's runtime runs — a Raspberry Pi with only numpy and
onnxruntime (or tflite-runtime / ai-edge-litert) installed, an emulated arm64 userland,
or the build host:

    python -m edgepack.device verify dist/model-1.0 --target rpi4 --json result.json
    python -m edgepack.device verify dist/model-1.0 --target rpi4 --artifacts ort-float,ort-int8

It checks every file's sha256 against the manifest, runs the golden inputs and the
bundled evaluation data through each artifact, compares with the float reference outputs
stored in the bundle, measures latency with the profile's threads, re-applies the
manifest's gates, and returns (or writes) a JSON result (schema edgepack.device-result/2)
that the host validates and merges (`edgepack merge`).

Findings that concern one artifact (a file missing or altered, a runtime not installed,
golden outputs that do not reproduce) are that artifact's `error` or `golden_ok`; findings
about the bundle as a whole are `problems`. Imports: stdlib, numpy, and the runtime an
artifact needs — nothing else (no pydantic, no onnx, no torch).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import BundleError, EdgepackError
from ..manifest.jsonio import DEVICE_RESULT_SCHEMA, MANIFEST_SCHEMA, SchemaMismatch, dumps, read_json, sha256_file
from ..safepath import bundle_file_problems, component_problem, file_entries, inside, relative_path_problem
from ..signing import sums_problems
from .calls import load_calls
from .gates import all_passed, evaluate_gates
from .hostinfo import host_info, usable_cores
from .metrics import class_labels, first_call, measure_latency, n_calls, numerics, output_metrics, run_all, sqnr_db
from .runtimes import RuntimeUnavailable, open_artifact, reference_session
from .tasks import make_task

# Float artifacts must reproduce the float reference outputs closely on any CPU.
FLOAT_GOLDEN_MIN_SQNR_DB = 40.0
RUNTIME_PIN_KEYS = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert", "tflite_runtime": "tflite_runtime"}


def read_bundle_manifest(root: Path) -> dict:
    """The bundle's manifest.json as plain JSON, schema-checked. BundleError when unreadable."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{root}: no manifest.json; expected an edgepack bundle folder")
    try:
        doc = read_json(path, MANIFEST_SCHEMA)
    except (SchemaMismatch, ValueError, OSError) as exc:
        raise BundleError(str(exc)) from None
    # names that become paths (a result's bundle name, folders a device writes) are checked on read too
    names = [("name", doc.get("name")), ("version", doc.get("version"))]
    names += [(f"targets key {t!r}", t) for t in doc.get("targets", {})]
    for field, value in names:
        why = component_problem(value)
        if why:
            raise BundleError(f"{path}: {field} {why}; expected one safe file name")
    return doc


def _file_problem(root: Path, entry: dict | None, seen: dict | None = None) -> str | None:
    """Why a manifest file entry does not match the file on disk, or None. `seen` collects
    the sha256 of each file checked (the result's `checksums`, which merge compares)."""
    if not entry:
        return None
    why = relative_path_problem(entry["path"])
    if why:  # never open what a forged manifest names outside the bundle (/etc/passwd, ../x)
        return f"{entry['path']}: manifest entry {why}, not a relative path inside the bundle"
    path = root / entry["path"]
    if path.is_symlink() or not inside(root, path):
        return f"{entry['path']}: is a symbolic link or resolves outside the bundle"
    if not path.is_file():
        return f"{entry['path']}: missing"
    digest = sha256_file(path)
    if seen is not None:
        seen[entry["path"]] = digest
    if path.stat().st_size != entry["size_bytes"] or digest != entry["sha256"]:
        return f"{entry['path']}: checksum mismatch (sha256 differs from manifest)"
    return None


def bundle_tampering(root: Path, manifest: dict) -> list[str]:
    """Everything in the bundle folder that does not match its manifest: files not accounted
    for (safepath.bundle_file_problems: unlisted, symlinks, escaping entries) and listed files
    missing or with another sha256; each as "path: reason"."""
    root = Path(root)
    problems = [f"{where}: {why}" for where, why in bundle_file_problems(root, manifest)]
    entries = file_entries(manifest)
    for path in sorted(entries):
        why = _file_problem(root, entries[path])
        if why and not any(p.startswith(f"{path}:") for p in problems):
            problems.append(why)
    return problems


def numerics_label(profile: dict, runtime: str, runtime_version: str, host: dict) -> str:
    """"device-exact" only when this machine has the target's ISA *and* runs the runtime
    version the profile pins for the device; anything else is "host"."""
    if host["arch"] != profile["cpu"]["arch"]:
        return "host"
    pin_key = RUNTIME_PIN_KEYS.get(runtime)
    pinned = (profile.get("device_runtime") or {}).get(pin_key) if pin_key else None
    return "device-exact" if pinned and pinned == runtime_version else "host"


def verify_bundle(bundle: Path | str, target: str | None = None, *, artifacts: list[str] | None = None,
                  threads: int | None = None, warmup: int = 5, runs: int = 50) -> dict:
    """Verify a bundle's artifacts (all, or the kinds in `artifacts`); a JSON-ready result."""
    root = Path(bundle)
    manifest = read_bundle_manifest(root)
    try:
        # a bundle is exactly what its manifest lists: no symlink, no extra file, no path outside
        problems = bundle_file_problems(root, manifest)
        if problems:
            return refused_result(f"{manifest['name']}-{manifest['version']}", problems, artifacts)
        return _verify(root, manifest, target, artifacts, threads, warmup, runs)
    except (KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{root / 'manifest.json'}: malformed manifest ({type(exc).__name__}: {exc})") from None


def refused_result(bundle: str, problems: list[tuple[str, str]], kinds: list[str] | None = None) -> dict:
    """A failed result that ran nothing: the bundle (or archive) holds what it must not."""
    return {"schema": DEVICE_RESULT_SCHEMA, "bundle": bundle,
            "runner": runner_info(host_info(), os.environ.get("EDGEPACK_EMULATED_CPU")),
            "artifacts_filter": list(kinds) if kinds else None, "targets": {},
            "problems": [{"where": where, "reason": why} for where, why in problems], "passed": False}


def runner_info(host: dict, emulated: str | None) -> dict:
    """What ran a result: this program and its version, the machine, device or emulator."""
    from .. import __version__

    return {**host, "emulated_cpu": emulated, "program": "edgepack.device", "edgepack": __version__,
            "environment": "emulator" if emulated else "device"}


def _verify(root: Path, manifest: dict, target, kinds, threads, warmup, runs) -> dict:
    targets = manifest["targets"]
    if target is not None and target not in targets:
        raise BundleError(f"{root}: target {target!r} is not in this bundle (has: {', '.join(targets)})")
    chosen = {n: t for n, t in targets.items() if target is None or n == target}
    if kinds:
        present = {a["kind"] for t in chosen.values() for a in t["artifacts"]}
        unknown = [k for k in kinds if k not in present]
        if unknown:
            raise BundleError(f"{root}: --artifacts names {', '.join(unknown)}, not in "
                              f"{target or 'this bundle'} (has: {', '.join(sorted(present))})")
    host = host_info()
    emulated = os.environ.get("EDGEPACK_EMULATED_CPU")
    result = {"schema": DEVICE_RESULT_SCHEMA, "bundle": f"{manifest['name']}-{manifest['version']}",
              "runner": runner_info(host, emulated), "artifacts_filter": list(kinds) if kinds else None,
              "targets": {}, "problems": [], "checksums": {}}
    seen = result["checksums"]
    shared = [manifest["baseline"], manifest["golden"]["inputs"], manifest["golden"]["reference_outputs"],
              manifest["reference_data"]["eval"], manifest["reference_data"]["eval_reference_outputs"]]
    result["problems"] = [{"where": e["path"], "reason": why.split(": ", 1)[1]}
                          for e in shared if (why := _file_problem(root, e, seen))]
    listed = {path: e["sha256"] for path, e in file_entries(manifest).items()}
    result["problems"] += [{"where": where, "reason": why} for where, why in sums_problems(root, listed)]
    result["problems"] += [{"where": where, "reason": why} for where, why in _size_claims(root, manifest, chosen)]
    if result["problems"]:
        result["passed"] = False
        return result

    data = _reference_data(root, manifest)
    for tname, t in chosen.items():
        profile = t["profile"]
        n_threads = min(threads or profile["threads"], usable_cores())
        tres = {"artifacts": []}
        for a in t["artifacts"]:
            if kinds and a["kind"] not in kinds:
                continue
            tres["artifacts"].append(_verify_artifact(root, a, t, data, host, n_threads, bool(emulated),
                                                      warmup, runs, seen))
        tres["passed"] = all(a["passed"] for a in tres["artifacts"])
        result["targets"][tname] = tres
    result["passed"] = all(t["passed"] for t in result["targets"].values())
    return result


# how far a manifest's recorded file-size ratio may be from the files' own (rounding only)
SIZE_CLAIM_TOLERANCE = 0.005


def _size_claims(root: Path, manifest: dict, targets: dict) -> list[tuple[str, str]]:
    """The size gates this runner judges read the manifest's ratios (it cannot parse every
    format's constants); the file-size ratio it can measure: an artifact whose recorded
    `size_ratio` is not its file's size over its runtime's float artifact's (or the baseline's)
    says the manifest describes other files (e.g. a float model swapped in for the int8 one,
    checksums fixed). (where, reason) for each."""
    out = []
    for t in targets.values():
        floats = {a["runtime"]: a["path"] for a in t["artifacts"] if a.get("precision") == "float32"}
        for a in t["artifacts"]:
            claimed = a.get("size_ratio")
            ref = floats.get(a.get("runtime"), manifest["baseline"]["path"])
            if not isinstance(claimed, (int, float)) or relative_path_problem(a["path"]) \
                    or relative_path_problem(ref):
                continue
            f, r = root / a["path"], root / ref
            if f.is_symlink() or r.is_symlink() or not f.is_file() or not r.is_file():
                continue  # named by the checksum checks
            measured = f.stat().st_size / max(r.stat().st_size, 1)
            if abs(measured - claimed) > SIZE_CLAIM_TOLERANCE * max(measured, claimed, 1e-9):
                out.append((a["path"], f"its manifest records size_ratio {claimed:.4g}, but the files give "
                                       f"{measured:.4g} (against {ref}): the manifest describes other files"))
    return out


def _reference_data(root: Path, manifest: dict) -> dict:
    def outputs(path: str) -> list[np.ndarray]:
        with np.load(root / path, allow_pickle=False) as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]

    inputs = manifest["model"]["inputs"]
    try:
        golden_calls, _ = load_calls(root / manifest["golden"]["inputs"]["path"], inputs)
        calls, y = load_calls(root / manifest["reference_data"]["eval"]["path"], inputs)
    except ValueError as exc:
        raise BundleError(f"{root}: {exc}") from None
    ref = outputs(manifest["reference_data"]["eval_reference_outputs"]["path"])
    spec = manifest["model"].get("task")
    # a bundle carries no code: a custom metric is not run here (its gates read as not judged)
    task = make_task(spec["name"], spec.get("options"), allow_custom=False) if spec else None
    baseline = output_metrics(ref[0], ref[0], class_labels(y, task))
    baseline = {k: baseline[k] for k in ("samples", "top1", "top5") if k in baseline}
    return {"golden_calls": golden_calls,
            "golden_ref": outputs(manifest["golden"]["reference_outputs"]["path"]), "calls": calls, "y": y,
            "ref": ref, "baseline": baseline, "task": task,
            "output_names": [o["name"] for o in manifest["model"]["outputs"]]}


def _verify_artifact(root: Path, a: dict, t: dict, d: dict, host: dict, threads: int, emulated: bool,
                     warmup: int, runs: int, seen: dict | None = None) -> dict:
    ares = {"kind": a["kind"], "path": a["path"], "passed": False}
    bad = [why for e in [a, *a["files"], a.get("reference_graph")] if (why := _file_problem(root, e, seen))]
    if bad:
        ares["error"] = "; ".join(bad)
        return ares
    profile, ref, y, calls = t["profile"], d["ref"], d["y"], d["calls"]
    try:
        session = open_artifact(root / a["path"], threads, a.get("layout"))
    except RuntimeUnavailable as exc:
        ares["error"] = f"runtime unavailable: {exc}"
        return ares
    ares["runtime"] = f"{session.runtime} {session.version}"
    label = numerics_label(profile, session.runtime, session.version, host)
    same_isa = host["arch"] == profile["cpu"]["arch"]
    golden_out = run_all(session, d["golden_calls"])
    golden = output_metrics(d["golden_ref"][0], golden_out[0], None)
    # every output of a float artifact must reproduce the float reference
    golden["sqnr_db"] = min(sqnr_db(r, t) for r, t in zip(d["golden_ref"], golden_out))
    golden_ok = a["precision"] != "float32" or golden["sqnr_db"] >= FLOAT_GOLDEN_MIN_SQNR_DB
    def measure(s):
        return numerics(ref, run_all(s, calls), y, n_calls(calls), d["task"], d["output_names"])

    numerics_by = {label: measure(session)}
    gate_numerics = label
    ref_graph = a.get("reference_graph")
    if not same_isa and a["precision"] != "float32":
        # This machine's kernels are not the device's: judge on the reference numerics.
        try:
            ref_session = reference_session(root / a["path"], a["precision"], a["runtime"], a.get("layout"),
                                            root / ref_graph["path"] if ref_graph else None)
            if ref_session is not None:
                numerics_by["reference"] = measure(ref_session)
                gate_numerics = "reference"
        except RuntimeUnavailable:
            pass  # e.g. a TFLite-only device without onnxruntime
    latency = None
    if not emulated:  # emulated time says nothing about the device
        latency = measure_latency(session, first_call(calls), warmup, runs)
        latency.update({"measured_on": label, "cpu": host["cpu"], "arch": host["arch"]})
    # size and weight ratios were measured at build time on these checksummed files
    verdicts = evaluate_gates(t["gates"], metrics=numerics_by[gate_numerics], baseline=d["baseline"],
                              precision=a["precision"], ratios=a, latency=latency,
                              latency_is_device=label == "device-exact" and not emulated)
    ares.update({"numerics": numerics_by, "gate_numerics": gate_numerics, "golden": golden, "golden_ok": golden_ok,
                 "metrics": numerics_by[gate_numerics], "baseline": d["baseline"], "latency": latency,
                 "gates": verdicts, "passed": golden_ok and all_passed(verdicts)})
    return ares


def summary_lines(result: dict) -> list[str]:
    """One line per problem and per artifact, then the verdict: what the runner prints."""
    lines = [f"FAIL {p['where']}: {p['reason']}" for p in result["problems"]]
    for tname, t in result["targets"].items():
        for a in t["artifacts"]:
            m = a.get("metrics")
            if m:
                detail = (f"top-1 {m['top1']:.2f}% " if m.get("top1") is not None else "") + \
                         f"SQNR {m['sqnr_db']:.1f} dB ({a['gate_numerics']} numerics, {a['runtime']})"
                failed = [g["gate"] for g in a.get("gates") or [] if g.get("passed") is False]
                if failed:
                    detail += f"; failed gates: {', '.join(failed)}"
                if a.get("golden_ok") is False:
                    detail += f"; golden outputs differ from the float reference (SQNR {a['golden']['sqnr_db']:.1f} dB)"
            else:
                detail = a.get("error", "")
            lines.append(f"{'PASS' if a['passed'] else 'FAIL'} {tname}/{a['kind']} {detail}")
    lines.append("verified" if result["passed"] else "verification FAILED")
    return lines


def main(argv: list[str] | None = None) -> int:
    class OneLineParser(argparse.ArgumentParser):
        """Usage errors as one line naming the option, exit 2 (argparse prints usage and error on two)."""

        def error(self, message: str):
            self.exit(2, f"error: {' '.join(message.removeprefix('argument ').split())}\n")

    def integer(low: int, high: int | None = None):
        """An argparse type: an integer in low..high; anything else names what was expected."""
        wanted = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"

        def parse(text: str) -> int:
            try:
                value = int(text)
            except ValueError:  # also a number of more than 4300 digits
                value = None
            if value is None or value < low or (high is not None and value > high):
                raise argparse.ArgumentTypeError(f"expected {wanted}, got {text[:40]}")
            return value

        return parse

    parser = OneLineParser(prog="python -m edgepack.device", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="verify a bundle's artifacts on this machine")
    v.add_argument("bundle", type=Path, help="a bundle folder or its release archive (.tar.gz)")
    v.add_argument("--target")
    v.add_argument("--artifacts",
                   help="comma-separated artifact kinds to verify (default: all), e.g. ort-float,ort-int8")
    v.add_argument("--threads", type=integer(1, 1024), help="1 to 1024 (default: the target profile's)")
    v.add_argument("--runs", type=integer(1, 100_000), default=50, help="latency runs per artifact (1 to 100000)")
    v.add_argument("--warmup", type=integer(0, 10_000), default=5, help="untimed runs before them (0 to 10000)")
    v.add_argument("--json", type=Path, help="write the result here")
    v.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.artifacts.split(",") if k.strip()] if args.artifacts else None
    from ..errors import Terminated, terminate_on_sigterm

    terminate_on_sigterm()
    try:
        return _run(args, kinds)
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the top-level handler: one line, exit 2
        from ..errors import sigterm_received

        if sigterm_received():
            print("terminated (SIGTERM)", file=sys.stderr)
            return 143
        if args.debug:
            import traceback

            traceback.print_exc()
        text = " ".join(str(exc).split())[:400]
        print(f"error: unexpected {type(exc).__name__}: {text} (run with --debug for the traceback)", file=sys.stderr)
        return 2


def _run(args, kinds) -> int:
    try:
        result = _verify_path(args, kinds)
        if args.json:
            try:
                args.json.write_text(dumps(result), encoding="utf-8")
            except OSError as exc:
                raise BundleError(f"{args.json}: cannot write the result ({exc.strerror})") from None
    except EdgepackError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    return 0 if result["passed"] else 1


def _verify_path(args, kinds) -> dict:
    """verify_bundle on a bundle folder, or on a release archive's bundle after every entry
    was checked (edgepack.archive.extract) and extracted into a temporary folder."""
    from ..archive import extract, is_archive

    if not is_archive(args.bundle):
        return verify_bundle(args.bundle, args.target, artifacts=kinds, threads=args.threads, warmup=args.warmup,
                             runs=args.runs)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgepack-device-") as tmp:
        got = extract(args.bundle, Path(tmp))
        if got.problems:
            return refused_result(args.bundle.name, got.problems, kinds)
        return verify_bundle(got.bundle, args.target, artifacts=kinds, threads=args.threads, warmup=args.warmup,
                             runs=args.runs)


if __name__ == "__main__":
    sys.exit(main())
