"""The build pipeline: the only module that knows the order of the stages.

load → (load data → compress) → export → clean → load data → calibrate/quantise → emit per target
→ verify → bundle. With compression the data is loaded before export (checked against the
declared input shape), so the compress stage can train and judge with it.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from . import __version__
from .bundle import MANIFEST_SCHEMA, Staging, file_entry, write_manifest
from .config import BuildConfig
from .data import Dataset, load_dataset
from .emit import GraphSet, writer_for
from .errors import ConfigError
from .graph import TensorSpec, clean_float_graph, io_specs, load_onnx, op_counts, parameter_count
from .hostinfo import host_info
from .inspect import weight_bytes
from .quantize import (calibrate, calibration_key, quantize_static, quantized_fraction, ranges_by_name,
                       resolve_settings)
from .report import render_report
from .targets import TargetProfile, resolve_target
from .verify import baseline_outputs, verify_artifact


class Reporter:
    """Progress hooks; the CLI passes one that draws progress bars. Default: silent."""

    def step(self, message: str) -> None:
        pass

    def track(self, description: str) -> Callable[[int, int], None]:
        return lambda done, total: None


@dataclass
class BuildResult:
    bundle: Path
    passed: bool
    manifest: dict
    failures: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def build(config: BuildConfig, reporter: Reporter | None = None) -> BuildResult:
    """Build, verify and bundle a release. Raises EdgepackError on bad input."""
    rep = reporter or Reporter()
    extra_dirs = list(config.targets_dirs)
    profiles = [_with_overrides(resolve_target(t, extra_dirs), config) for t in config.targets]
    if len({p.name for p in profiles}) != len(profiles):
        raise ConfigError(f"targets: {config.targets} names a target twice")
    final = Path(config.out).resolve() / f"{config.name}-{config.version}"

    with Staging(final) as staging, tempfile.TemporaryDirectory(prefix="edgepack-") as tmp:
        root, tmp = staging.path, Path(tmp)
        rep.step("loading model")
        from .load import load_model

        loaded = load_model(config.model)
        data, compression = None, None
        if config.compress.enabled:  # config validation guarantees a torch factory here
            # Compression trains and judges with the data, so it is loaded before export, checked
            # against the declared input: the exported graph's input is input_shape in float32.
            data = _load_data(config, TensorSpec("input", tuple(config.model.input_shape), "float32"), rep)
            loaded.module, compression = _compress(loaded.module, config, profiles, data, tmp, rep)
        float_path, source_info = _float_graph(loaded, config, tmp, rep)
        baseline_dir = root / "baseline"
        baseline_dir.mkdir()
        shutil.copyfile(float_path, baseline_dir / "model.float.onnx")
        float_path = baseline_dir / "model.float.onnx"
        float_model = onnx.load(str(float_path))
        inputs, outputs = io_specs(float_model)
        if len(inputs) != 1:
            from .errors import ModelError

            raise ModelError(f"{source_info['path']}: the graph has {len(inputs)} inputs "
                             f"({', '.join(i.name for i in inputs)}); edgepack supports single-input models")
        in_spec = inputs[0]
        batch = in_spec.shape[0]
        calib, evalset, eval_note = data or _load_data(config, in_spec, rep)
        n_eval = (len(evalset) // batch) * batch
        x_eval, y_eval = evalset.x[:n_eval], (None if evalset.y is None else evalset.y[:n_eval])

        rep.step("float baseline")
        base = baseline_outputs(float_path, x_eval, y_eval, batch)
        _write_reference_data(root, config, evalset, x_eval, y_eval, base, batch)
        if compression is not None:
            rep.step("measuring the compressed float model against the unpruned one")
            compression = _compression_entry(compression, float_path, x_eval, y_eval, batch, profiles, config)

        quantized: dict[str, tuple[Path, dict]] = {}
        calibrations: dict[str, object] = {}
        emit_cache: dict = {}
        targets_manifest, failures = {}, []
        for profile in profiles:
            settings = resolve_settings(profile, config.quantization)
            target_dir = root / profile.name
            target_dir.mkdir()
            qdq, ranges = None, None
            if "ort-int8" in profile.artifacts or "tflite-int8" in profile.artifacts:
                ckey = calibration_key(settings)
                if ckey not in calibrations:
                    rep.step(f"calibrating ({settings.calibration_method}, {len(calib)} samples)")
                    calibrations[ckey] = calibrate(float_path, calib, settings, progress=rep.track("calibration"),
                                                   source=source_info["path"])
                if settings.key() not in quantized:
                    rep.step(f"quantising ONNX to int8 (reduce_range={settings.reduce_range})")
                    qpath = tmp / f"model.int8.{len(quantized)}.onnx"
                    quantize_static(float_path, calib, settings, qpath, ranges=calibrations[ckey],
                                    source=source_info["path"])
                    quantized[settings.key()] = (qpath, ranges_by_name(calibrations[ckey]))
                qdq, ranges = quantized[settings.key()]
            if "ort-int8" in profile.artifacts:
                shutil.copyfile(qdq, target_dir / "model.int8.qdq.onnx")
                qdq = target_dir / "model.int8.qdq.onnx"
            graphs = GraphSet(float_onnx=float_path, int8_qdq=qdq, calibration=calib, quant_settings=settings,
                              ranges=ranges, cache=emit_cache, progress=rep.track("calibration (TFLite)"),
                              source=source_info["path"])
            rep.step(f"emitting artifacts for {profile.name}")
            artifacts = []
            for family in dict.fromkeys(k.split("-", 1)[0] for k in profile.artifacts):
                artifacts += writer_for(family).emit(graphs, profile, target_dir)
            entry = _verify_target(config, profile, artifacts, base, x_eval, y_eval, batch, root, rep, float_path)
            entry["quantization_settings"] = settings.__dict__ if qdq is not None else None
            targets_manifest[profile.name] = entry
            failures += [f"{profile.name}/{a['kind']}: {v['gate']} = {v['value']} (threshold {v['threshold']})"
                         for a in entry["artifacts"] for v in a["metrics"]["gates"] if v["passed"] is False]

        passed = not failures
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "name": config.name,
            "version": config.version,
            "status": "passed" if passed else "failed",
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config_hash": config.config_hash(),
            "config": config.model_dump(mode="json"),
            "tools": _tool_versions(source_info["kind"]),
            "host": host_info(),
            "source": source_info,
            "model": {
                "inputs": [dict(s.to_json(), layout=config.model.input_layout) for s in inputs],
                "outputs": [s.to_json() for s in outputs],
                "batch": batch,
                "parameters": parameter_count(float_model),
                "op_counts": op_counts(float_model),
            },
            "baseline": {**file_entry(float_path, root), "runtime": "onnxruntime", "precision": "float32",
                         "metrics": base.metrics, "measured_on": "host (fp32; platform-independent within 1e-5)"},
            "compression": compression,
            "data": {
                "calibration": {"source": calib.source, "samples": len(calib)},
                "evaluation": {"source": evalset.source, "samples": n_eval, "labelled": y_eval is not None,
                               "note": eval_note},
            },
            "golden": _golden_entry(root),
            "reference_data": _reference_data_entry(root),
            "targets": targets_manifest,
            "gates_passed": passed,
            "failures": failures,
        }
        write_manifest(manifest, root)
        if config.verify.emulate:
            manifest = _emulate_targets(manifest, profiles, root, rep)
            write_manifest(manifest, root)
            failures, passed = manifest["failures"], manifest["gates_passed"]
        (root / "report.md").write_text(render_report(manifest))
        bundle = staging.commit()
    return BuildResult(bundle=bundle, passed=passed, manifest=manifest, failures=failures)


def _emulate_targets(manifest: dict, profiles, root: Path, rep: Reporter) -> dict:
    """Device-exact numbers for every target of another ISA, merged into the manifest."""
    from .device_results import merge_device_result
    from .emulate import prepare_userland, run_device_runner
    from .targets import host_arch

    for profile in profiles:
        if profile.cpu.arch == host_arch():
            continue
        rep.step(f"emulated {profile.cpu.model}: device-exact verification of {profile.name}")
        result = run_device_runner(prepare_userland(profile, progress=rep.track("preparing userland")), root,
                                   profile.name)
        manifest = merge_device_result(manifest, result)
    return manifest


def _with_overrides(profile: TargetProfile, config: BuildConfig) -> TargetProfile:
    """The profile with the config's [tflite] overrides applied (quantisation and gate
    overrides are applied where they are used)."""
    tfl = {k: v for k, v in config.tflite.model_dump().items() if v is not None}
    if not tfl:
        return profile
    return profile.model_copy(update={"tflite": profile.tflite.model_copy(update=tfl)})


def _load_data(config: BuildConfig, in_spec: TensorSpec, rep: Reporter) -> tuple[Dataset, Dataset, str]:
    """Calibration and evaluation data checked against the model input; evaluation falls back
    to the calibration data (and says so)."""
    rep.step("loading data")
    d = config.data
    calib = load_dataset(d.calibration, in_spec, x_key=d.x_key, y_key=d.y_key, preprocess=d.preprocess,
                         limit=d.calibration_samples, role="calibration")
    if d.evaluation:
        evalset = load_dataset(d.evaluation, in_spec, x_key=d.x_key, y_key=d.y_key, preprocess=d.preprocess,
                               limit=d.evaluation_samples, role="evaluation")
        return calib, evalset, "held-out evaluation data"
    return calib, calib, "calibration data (no evaluation data given: numbers are optimistic)"


def _compress(module, config: BuildConfig, profiles: list[TargetProfile], data, tmp: Path, rep: Reporter):
    """Run the compress stage; also export the unpruned model, which the report compares with."""
    from .compress import CompressionData, compress  # torch-only stage
    from .export import export_torch

    m, d, dcfg = config.model, config.data, config.compress.distill
    calib, evalset, _ = data
    batch = m.input_shape[0]
    n_eval = (len(evalset) // batch) * batch
    train, train_source = None, "calibration data"
    if dcfg is not None and dcfg.data:
        spec = TensorSpec("input", tuple(m.input_shape), "float32")
        train = load_dataset(dcfg.data, spec, x_key=d.x_key, y_key=d.y_key, preprocess=d.preprocess,
                             limit=dcfg.samples, role="distillation")
        train_source = train.source
    rep.step("exporting the unpruned model (the comparison baseline)")
    raw = export_torch(module, tuple(m.input_shape), tmp / "unpruned.exported.onnx", opset=m.opset)
    unpruned = tmp / "unpruned.float.onnx"
    onnx.save(clean_float_graph(load_onnx(raw), m.torch, m.input_shape), str(unpruned))
    rep.step("compressing")
    result = compress(module, config.compress, rep, data=CompressionData(
        input_shape=tuple(m.input_shape), calibration_x=calib.x, calibration_y=calib.y,
        eval_x=evalset.x[:n_eval], eval_y=None if evalset.y is None else evalset.y[:n_eval],
        train_x=None if train is None else train.x, train_y=None if train is None else train.y,
        train_source=train_source, round_to=profiles[0].round_to))
    return result.module, {"record": result.record, "unpruned_onnx": unpruned}


LATENCY_ROUNDS = 5


def _compression_entry(compression: dict, float_path: Path, x, y, batch: int, profiles, config: BuildConfig) -> dict:
    """The manifest's `compression` block: the stage's torch measurements plus the float ONNX
    files before and after (size, zlib size, ONNX Runtime latency with the same threads,
    quality on the evaluation data against the unpruned model)."""
    import zlib

    from .hostinfo import usable_cores
    from .metrics import measure_latency, output_metrics, run_all
    from .runtimes import open_session

    threads = min(config.verify.host_threads or profiles[0].threads, usable_cores())
    paths = {"float_unpruned": compression["unpruned_onnx"], "float_compressed": float_path}
    sessions = {k: open_session(p, threads) for k, p in paths.items()}
    outputs = {k: run_all(s, x, batch)[0] for k, s in sessions.items()}
    # Interleaved rounds, so background load hits both models alike; median of round p50s.
    # Each round runs for at least ~0.2 s: a model of 0.2 ms measured 1.47x faster after
    # pruning with 3 rounds of 30 runs and 1.59x with 9 rounds of 100.
    p50s: dict[str, list[float]] = {k: [] for k in paths}
    quick = max(measure_latency(s, x[:batch], 3, 10)["p50_ms"] for s in sessions.values())
    runs = max(config.verify.latency_runs, min(2000, int(200 / max(quick, 1e-3))))
    for _ in range(LATENCY_ROUNDS):
        for k, s in sessions.items():
            p50s[k].append(measure_latency(s, x[:batch], config.verify.warmup_runs, runs)["p50_ms"])
    entry = {**compression["record"], "threads": threads}
    for k, p in paths.items():
        data = Path(p).read_bytes()
        entry[k] = {"size_bytes": len(data), "zlib_bytes": len(zlib.compress(data, 9)),
                    "latency_p50_ms": float(np.median(p50s[k])), "latency_rounds_p50_ms": p50s[k],
                    "latency_runs_per_round": runs,
                    "runtime": "onnxruntime", "threads": threads,
                    "metrics": output_metrics(outputs["float_unpruned"], outputs[k], y)}
    return entry


def _float_graph(loaded, config: BuildConfig, tmp: Path, rep: Reporter) -> tuple[Path, dict]:
    """Export (torch) or read (ONNX) the loaded source; return a cleaned float ONNX path plus a
    description of the source."""
    m = config.model
    if loaded.kind == "onnx":
        model, source = load_onnx(loaded.onnx_path), str(loaded.onnx_path)
    else:
        from .export import export_torch

        rep.step("exporting to ONNX")
        raw = export_torch(loaded.module, tuple(m.input_shape), tmp / "exported.onnx", opset=m.opset)
        model, source = load_onnx(raw), loaded.source
    rep.step("cleaning float graph")
    cleaned = clean_float_graph(model, source, m.input_shape)
    out = tmp / "model.float.onnx"
    onnx.save(cleaned, str(out))
    return out, {"kind": loaded.kind, "path": source}


def _write_reference_data(root: Path, config: BuildConfig, evalset: Dataset, x_eval, y_eval, base, batch: int):
    """Golden inputs with float outputs, and the bundled eval subset with float outputs."""
    golden_dir, data_dir = root / "golden", root / "data"
    golden_dir.mkdir()
    data_dir.mkdir()
    g = min(len(x_eval), max(batch, (config.verify.golden_samples // batch) * batch or batch))
    np.save(golden_dir / "inputs.npy", x_eval[:g])
    np.savez(golden_dir / "reference_outputs.npz", *[o[:g] for o in base.outputs])
    arrays = {"x": x_eval}
    if y_eval is not None:
        arrays["y"] = y_eval
    np.savez(data_dir / "eval.npz", **arrays)
    np.savez(data_dir / "eval_reference_outputs.npz", *base.outputs)


def _golden_entry(root: Path) -> dict:
    return {
        "inputs": file_entry(root / "golden" / "inputs.npy", root),
        "reference_outputs": file_entry(root / "golden" / "reference_outputs.npz", root),
        "samples": int(np.load(root / "golden" / "inputs.npy").shape[0]),
        "note": "reference outputs are the float baseline's, one array per model output (arr_0, arr_1, ...)",
    }


def _reference_data_entry(root: Path) -> dict:
    return {
        "eval": file_entry(root / "data" / "eval.npz", root),
        "eval_reference_outputs": file_entry(root / "data" / "eval_reference_outputs.npz", root),
    }


def _verify_target(config, profile: TargetProfile, artifacts, base, x, y, batch, root, rep, float_path) -> dict:
    gates = profile.gates.model_dump()
    gates.update({k: v for k, v in config.gates.model_dump().items() if v is not None})
    weights = {a.path: weight_bytes(a.path) for a in artifacts}
    floats = {a.runtime: a.path for a in artifacts if a.precision == "float32"}
    entries = []
    for a in artifacts:
        rep.step(f"verifying {profile.name}/{a.path.name}")
        ref = floats.get(a.runtime, float_path)
        ratios = {"size_ratio": a.path.stat().st_size / ref.stat().st_size,
                  "weight_ratio": weights[a.path] / max(weights[ref] if ref in weights else weight_bytes(ref), 1)}
        metrics = verify_artifact(a, profile, base, x, y, batch, gates=gates, ratios=ratios,
                                  warmup=config.verify.warmup_runs, runs=config.verify.latency_runs,
                                  threads=config.verify.host_threads)
        session_io = metrics.pop("io")
        entries.append({
            "kind": a.kind,
            **file_entry(a.path, root),
            "runtime": a.runtime,
            "precision": a.precision,
            "weight_bytes": weights[a.path],
            **ratios,
            "files": [file_entry(f, root) for f in a.extra_files],
            "reference_graph": file_entry(a.reference_onnx, root) if a.reference_onnx and a.reference_onnx.is_relative_to(root) else None,
            "inputs": session_io["inputs"],
            "outputs": session_io["outputs"],
            "layout": a.layout or _onnx_layout(session_io, config.model.input_layout),
            "quantization": a.quantization,
            "quantized_ops": quantized_fraction(onnx.load(str(a.reference_onnx))) if a.precision == "int8" and a.reference_onnx else None,
            "metrics": metrics,
        })
    return {
        "profile": profile.model_dump(mode="json"),
        "threads": profile.threads,
        "gates": gates,
        "artifacts": entries,
        "passed": all(e["metrics"]["passed"] for e in entries),
    }


def _onnx_layout(session_io: dict, input_layout: str) -> dict:
    """Layout block for an artifact whose tensors are laid out as in the ONNX graph."""
    names = {2: "NC", 3: "NCL"}
    entry = lambda t, lay: {"name": t["name"], "layout": lay, "perm": list(range(len(t["shape"])))}
    return {"inputs": [entry(t, input_layout) for t in session_io["inputs"]],
            "outputs": [entry(t, "NCHW" if len(t["shape"]) == 4 else names.get(len(t["shape"]), "ND"))
                        for t in session_io["outputs"]]}


def _tool_versions(source_kind: str) -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"edgepack": __version__, "python": platform.python_version()}
    names = ["numpy", "onnx", "onnxruntime", "ai-edge-litert"] + (["torch", "onnxscript"] if source_kind == "torch" else [])
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return out
