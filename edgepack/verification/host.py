"""Host-side verification of artifacts against the float baseline.

For each artifact it records up to two kinds of numbers and says which is which:
- "host": the artifact file itself, run by this machine's runtime build (fused int8
  kernels of this CPU). Equal to the device's numbers only when the device runs the same
  kernels.
- "reference": the artifact's QDQ graph executed op by op without graph optimisation, so
  int8 math is dequantise → float op → requantise. It is the device-independent meaning of
  the quantised model, free of any one CPU's kernel shortcuts.
Latency is always host latency and labelled with the host CPU.

`verify_target` assembles a target's manifest entry (plain JSON-ready dicts, validated
against `edgepack.manifest.models.TargetEntry` by the caller): each artifact's files,
I/O, size and weight ratios against the float artifact of the same runtime, and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .gates import all_passed, evaluate_gates
from .hostinfo import host_info, usable_cores
from .metrics import class_labels, first_call, measure_latency, n_calls, output_metrics, run_all
from .metrics import numerics as numerics_of
from .runtimes import open_artifact, open_session, reference_session


@dataclass
class Baseline:
    outputs: list[np.ndarray]
    metrics: dict
    output_names: list[str]
    task: object = None  # the model's task (edgepack.verification.tasks), or None


def baseline_outputs(float_onnx, calls: dict[str, np.ndarray], labels, task=None) -> Baseline:
    """Float reference: the cleaned float ONNX in ONNX Runtime (fp32, 1 thread), over every
    model call (`calls`: per input name, `(calls, *input_shape)`)."""
    session = open_session(float_onnx, threads=1)
    outs = run_all(session, calls)
    metrics = output_metrics(outs[0], outs[0], class_labels(labels, task))
    for k in ("top1_agreement", "sqnr_db", "max_abs_error"):
        metrics.pop(k)
    return Baseline(outs, metrics, [o.name for o in session.outputs], task)


def verify_artifact(artifact, profile, baseline: Baseline, calls: dict[str, np.ndarray], labels, *, gates: dict,
                    ratios: dict | None, warmup: int, runs: int, threads: int | None = None) -> dict:
    """Measure one artifact over the model calls `calls`; returns the manifest's
    per-artifact `metrics` block."""
    threads = min(threads or profile.threads, usable_cores())
    session = open_artifact(artifact.path, threads, artifact.layout)
    n = n_calls(calls)

    def measure(s):
        return numerics_of(baseline.outputs, run_all(s, calls), labels, n, baseline.task, baseline.output_names)

    numerics = {"host": measure(session)}
    ref_session = reference_session(artifact.path, artifact.precision, artifact.runtime, artifact.layout,
                                    artifact.reference_onnx)
    if ref_session is not None:
        numerics["reference"] = measure(ref_session)
    latency = measure_latency(session, first_call(calls), warmup, runs)
    host = host_info()
    latency.update({"measured_on": "host", "cpu": host["cpu"], "arch": host["arch"],
                    "profile_threads": profile.threads})
    same_isa = profile.matches_host()
    # Gates read the numbers closest to the device: the host's own when the host runs the
    # device's ISA family, otherwise the reference numerics.
    gate_numerics = "host" if same_isa or "reference" not in numerics else "reference"
    verdicts = evaluate_gates(gates, metrics=numerics[gate_numerics], baseline=baseline.metrics,
                              precision=artifact.precision, ratios=ratios, latency=latency,
                              latency_is_device=same_isa)
    return {
        "numerics": numerics,
        "gate_numerics": gate_numerics,
        "latency": latency,
        "host_is_target_isa": same_isa,
        "gates": verdicts,
        "passed": all_passed(verdicts),
        "runtime_version": session.version,
        "io": session.io_json(),  # moved to the artifact entry by the pipeline
    }


def head_to_head(path: Path, layout: dict | None, float_path: Path, float_layout: dict | None, feed, *,
                 threads: int, rounds: int, warmup: int = 3) -> dict:
    """The artifact at `path` against the float artifact at `float_path`, one run of each per
    round, alternating: {ratio (median / median), rounds, threads, p50_ms, float_p50_ms}."""
    import time

    threads = min(threads, usable_cores())
    sessions = [open_artifact(path, threads, layout), open_artifact(float_path, threads, float_layout)]
    prepared = [s.prepare(feed) for s in sessions]
    for s, x in zip(sessions, prepared):
        for _ in range(warmup):
            s.invoke(x)
    times: list[list[float]] = [[], []]
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)  # neither always runs second (warm caches)
        for i in order:
            t0 = time.perf_counter()
            sessions[i].invoke(prepared[i])
            times[i].append(time.perf_counter() - t0)
    mine, ref = (float(np.median(t)) * 1e3 for t in times)
    return {"ratio": mine / ref if ref > 0 else float("inf"), "rounds": rounds, "threads": threads,
            "p50_ms": mine, "float_p50_ms": ref}


def verify_target(profile, artifacts, baseline: Baseline, calls: dict[str, np.ndarray], labels, root: Path, *,
                  gates: dict, float_onnx: Path, warmup: int, runs: int, threads: int | None, input_layouts: dict,
                  weight_bytes, quantized_fraction, int8_floor: dict | None = None, float_refs: dict | None = None,
                  on_artifact=None) -> dict:
    """A target's manifest entry. `weight_bytes(path)` and `quantized_fraction(path)` are
    the build's inspectors (they need onnx and LiteRT's schema, which a device does not);
    `int8_floor` is the model's theoretical int8 size in bytes by runtime (zero points are
    int64 in TFLite; `inspection.int8_floor_by_runtime`);
    `float_refs` (runtime -> path) names float artifacts verified earlier, for the ratios of
    artifacts verified on their own (a search trial)."""
    from ..manifest.jsonio import file_entry

    weights = {a.path: weight_bytes(a.path) for a in artifacts}
    floats = {**(float_refs or {}), **{a.runtime: a.path for a in artifacts if a.precision == "float32"}}
    entries = []
    for a in artifacts:
        if on_artifact:
            on_artifact(a)
        ref = floats.get(a.runtime, float_onnx)
        ref_weights = weights[ref] if ref in weights else weight_bytes(ref)
        ratios = {"size_ratio": a.path.stat().st_size / ref.stat().st_size,
                  "weight_ratio": weights[a.path] / max(ref_weights, 1),
                  "int8_size_ratio": (weights[a.path] / int8_floor[a.runtime]
                                      if int8_floor and int8_floor.get(a.runtime) else None)}
        metrics = verify_artifact(a, profile, baseline, calls, labels, gates=gates, ratios=ratios,
                                  warmup=warmup, runs=runs, threads=threads)
        session_io = metrics.pop("io")
        inside = a.reference_onnx is not None and Path(a.reference_onnx).is_relative_to(root)
        entries.append({
            "kind": a.kind,
            **file_entry(a.path, root),
            "runtime": a.runtime,
            "precision": a.precision,
            "weight_bytes": weights[a.path],
            **ratios,
            "files": [file_entry(f, root) for f in a.extra_files],
            "reference_graph": file_entry(a.reference_onnx, root) if inside else None,
            "inputs": session_io["inputs"],
            "outputs": session_io["outputs"],
            "layout": a.layout or onnx_layout(session_io, input_layouts),
            "quantization": a.quantization,
            "quantized_ops": (quantized_fraction(a.reference_onnx)
                              if a.precision == "int8" and a.reference_onnx else None),
            "metrics": metrics,
        })
    return {
        "profile": profile.model_dump(mode="json"),
        "threads": profile.threads,
        "gates": gates,
        "artifacts": entries,
        "passed": all(e["metrics"]["passed"] for e in entries),
    }


def onnx_layout(session_io: dict, input_layouts: dict) -> dict:
    """Layout block for an artifact whose tensors are laid out as in the ONNX graph;
    `input_layouts`: what each input's axes mean, by input name."""
    names = {0: "scalar", 1: "N", 2: "NC", 3: "NCL", 4: "NCHW"}

    def entry(t, layout):
        return {"name": t["name"], "layout": layout, "perm": list(range(len(t["shape"])))}

    return {"inputs": [entry(t, input_layouts.get(t["name"], names.get(len(t["shape"]), "ND")))
                       for t in session_io["inputs"]],
            "outputs": [entry(t, names.get(len(t["shape"]), "ND")) for t in session_io["outputs"]]}
