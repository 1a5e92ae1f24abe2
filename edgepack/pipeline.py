"""The build pipeline: the only module that knows the order of the stages.

preflight → load → (data → compress) → export + clean → data → float baseline →
per target: int8 graphs → emit → verify → manifest + report → bundle commit
(→ emulated device runs, merged).

Each step is a call into its stage; this module measures nothing and formats nothing.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from .config import BuildConfig
from .errors import ConfigError, ModelError
from .inspection import int8_floor_by_runtime, weight_bytes
from .manifest.files import write_manifest
from .manifest.jsonio import file_entry, source_sha256
from .manifest.models import Failure, Manifest, TargetEntry
from .preflight import preflight
from .progress import Reporter
from .stages.bundle import Staging, created_utc, write_reference_data
from .stages.data import Dataset, check_class_labels, load_dataset
from .stages.emit import GraphSet, emit_kinds, not_produced
from .stages.graph import (
    TensorSpec,
    clean_float_graph,
    dynamic_outputs,
    input_specs,
    io_specs,
    load_onnx,
    op_counts,
    parameter_count,
    pin_output_shapes,
)
from .stages.quantize import Int8Graphs, quantized_ops, resolve_settings
from .stages.rewrite import int8_slowdown_causes, speed_rewrites
from .targets import TargetProfile, host_arch
from .verification.host import Baseline, baseline_outputs, verify_target
from .verification.hostinfo import host_info, tool_versions
from .verification.metrics import n_calls, stacked
from .verification.select import with_defaults

# kinds made from the calibrated ranges (and the int8 QDQ graph); the others need only the float graph
INT8_KINDS = ("ort-int8", "tflite-int8", "ort-int16", "ort-int8-pot", "tflite-int16x8")


@dataclass
class BuildResult:
    """What `build` returns: where the bundle is and its verdict."""

    bundle: Path
    manifest: Manifest

    @property
    def passed(self) -> bool:
        return self.manifest.gates_passed

    @property
    def failures(self) -> list[Failure]:
        return self.manifest.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def build(config: BuildConfig, reporter: Reporter | None = None, *, sign_key=None) -> BuildResult:
    """Build, verify and bundle a release. Raises EdgepackError on bad input. `sign_key` (an
    ed25519 private key, edgepack.signing): the bundle is signed in its staging folder, so it
    is committed signed or not at all."""
    rep = reporter or Reporter()
    profiles = _profiles(preflight(config), config)
    # a custom metric's file is imported (its code runs) before any slow stage: a missing one fails now
    task = config.task.build(config.base_dir, config.words) if config.task else None
    final = Path(config.out).resolve() / f"{config.name}-{config.version}"
    built = created_utc()  # SOURCE_DATE_EPOCH when set (a malformed one fails now)

    # staging.tmp: the build's scratch folder, beside the output (found and cleaned after a kill)
    with Staging(final) as staging:
        root, tmp = staging.path, staging.tmp
        with rep.stage("loading the model"):
            from .stages.load import load_model

            loaded = load_model(config.model)
        data, compression = None, None
        if config.compress.enabled:  # config validation guarantees a torch factory here
            # Compression trains and judges with the data, so it is loaded before export, checked
            # against the declared input (config validation allows one float input here).
            data = _load_data(config, _declared_specs(config), rep)
            loaded.module, compression = _compress(loaded.module, config, profiles, data, tmp, rep)
        float_path, rewrites = _float_graph(loaded, config, tmp, rep, root / "baseline" / "model.float.onnx")
        float_model = onnx.load(str(float_path))
        inputs = input_specs(float_model)
        calib, evalset, eval_note = data or _load_data(config, inputs, rep)
        if dynamic_outputs(float_model):  # e.g. an If on an input's value: the data's first call decides
            float_model = pin_output_shapes(float_model, calib.feed(0), loaded.source)
            onnx.save(float_model, str(float_path))
        _, outputs = io_specs(float_model)
        batch, n_eval = evalset.batch, len(evalset)

        with rep.stage(f"float baseline ({n_eval} samples)"):
            base = baseline_outputs(float_path, evalset.calls, evalset.y, task)
            check_class_labels(evalset, base.outputs[0], base.output_names[0], task)  # labels past the classes
            if task is not None:  # a custom metric runs once on float vs float: its names and directions
                task.prepare(stacked(base.outputs, n_calls(evalset.calls)), evalset.y)
            golden, reference_data = write_reference_data(root, evalset, base.outputs, config.verify.golden_samples)
        if compression is not None:
            compression = _measure_compression(compression, float_path, evalset, profiles, config, rep)

        int8_floor = int8_floor_by_runtime(float_model)
        int8 = Int8Graphs(float_path, calib, tmp, loaded.source, rep)
        emit_cache: dict = {}
        targets = {}
        for profile in profiles:
            targets[profile.name] = _target(config, profile, float_path, int8, emit_cache, calib, base, evalset,
                                            root, loaded.source, rep, int8_floor)
        if not any(t.artifacts for t in targets.values()):  # nothing to ship: the model itself is the problem
            first = next(n for t in targets.values() for n in t.not_produced)
            raise ModelError(f"{loaded.source}: no artifact could be produced for any target; "
                             f"{first.kind}: {first.reason}")

        manifest = Manifest(
            name=config.name,
            version=config.version,
            status="passed",
            created_utc=built,
            config_hash=config.config_hash(),
            config=config.portable_dump(),
            tools=tool_versions(["numpy", "onnx", "onnxruntime", "ai-edge-litert", "flatbuffers"]
                                + (["torch", "onnxscript"] if loaded.kind == "torch" else [])),
            host=host_info(),
            source={"kind": _source_kind(config), "path": config.portable_path(_source(config)),
                    "sha256": source_sha256(_source(config))},
            model={"task": config.task.spec(config.portable_path) if config.task else None,
                   "inputs": [dict(s.to_json(), layout=config.model.layout_of(s.name, len(s.shape))) for s in inputs],
                   "outputs": [s.to_json() for s in outputs], "batch": batch,
                   "parameters": parameter_count(float_model), "op_counts": op_counts(float_model),
                   "int8_floor_bytes": int8_floor, "graph_rewrites": rewrites},
            baseline={**file_entry(float_path, root), "runtime": "onnxruntime", "precision": "float32",
                      "metrics": base.metrics, "measured_on": "host (fp32; platform-independent within 1e-5)"},
            compression=compression,
            data={"calibration": {**_data_identity(config, config.data.calibration), "samples": len(calib)},
                  "evaluation": {**_data_identity(config, config.data.evaluation or config.data.calibration),
                                 "samples": n_eval, "labelled": evalset.y is not None, "note": eval_note}},
            golden=golden,
            reference_data=reference_data,
            targets=targets,
            gates_passed=True,
            failures=[],
        ).with_verdict()
        manifest = with_defaults(manifest)
        write_manifest(manifest, root)
        if config.verify.emulate:
            manifest = _emulate_targets(manifest, profiles, root, rep)
            write_manifest(manifest, root)
        if sign_key is not None:
            from .signing import sign_bundle

            sign_bundle(root, sign_key)
        bundle = staging.commit()
    return BuildResult(bundle=bundle, manifest=manifest)


def _profiles(profiles: list[TargetProfile], config: BuildConfig) -> list[TargetProfile]:
    """The profiles with the config's [tflite] overrides applied (quantisation and gate
    overrides are applied where they are used)."""
    if len({p.name for p in profiles}) != len(profiles):
        raise ConfigError(f"targets: {config.targets} names a target twice")
    tfl = {k: v for k, v in config.tflite.model_dump().items() if v is not None}
    if not tfl:
        return profiles
    return [p.model_copy(update={"tflite": p.tflite.model_copy(update=tfl)}) for p in profiles]


def _data_identity(config: BuildConfig, spec: str) -> dict:
    return {"source": config.portable_path(spec), "sha256": source_sha256(spec)}


def _source_kind(config: BuildConfig) -> str:
    return next(k for k in ("onnx", "torch", "pt2") if getattr(config.model, k) is not None)


def _source(config: BuildConfig) -> str:
    return str(getattr(config.model, _source_kind(config)))


def _declared_specs(config: BuildConfig) -> list[TensorSpec]:
    return [TensorSpec(n, s, d) for n, s, d in config.model.declared_inputs()]


def _load_data(config: BuildConfig, in_spec: list[TensorSpec], rep: Reporter) -> tuple[Dataset, Dataset, str]:
    """Calibration and evaluation data checked against the model inputs; evaluation falls
    back to the calibration data (and says so)."""
    d = config.data
    # class indices unless a task other than classification reads the labels its own way
    labels = "classes" if config.task is None or config.task.name == "classification" else "task"
    with rep.stage("loading data"):
        calib = load_dataset(d.calibration, in_spec, x_key=d.x_key, y_key=d.y_key, preprocess=d.preprocess,
                             limit=d.calibration_samples, role="calibration", labels=labels)
        if not d.evaluation:
            return calib, calib, "calibration data (no evaluation data given: numbers are optimistic)"
        evalset = load_dataset(d.evaluation, in_spec, x_key=d.x_key, y_key=d.y_key, preprocess=d.preprocess,
                               limit=d.evaluation_samples, role="evaluation", labels=labels)
    return calib, evalset, "held-out evaluation data"


def _float_graph(loaded, config: BuildConfig, tmp: Path, rep: Reporter, dest: Path) -> tuple[Path, list[str]]:
    """Export (torch) or read (ONNX) the loaded source, clean it, and save it at `dest`;
    returns that path and the speed rewrites applied."""
    m = config.model
    if loaded.kind == "onnx":
        model = load_onnx(loaded.onnx_path)
    else:
        from .stages.export import export_torch

        with rep.stage("exporting to ONNX (torch.onnx, dynamo)") as tick:
            model = load_onnx(export_torch(loaded.module, m.declared_inputs(), tmp / "exported.onnx", opset=m.opset,
                                           progress=tick))
    with rep.stage("cleaning the float graph"):
        # numerically equivalent rewrites that let int8 fuse (ReduceMean over H,W as a
        # GlobalAveragePool, Max/Min with a constant as Clip, Div by a constant as Mul)
        cleaned, rewrites = speed_rewrites(clean_float_graph(model, loaded.source, m.shape_overrides()))
        dest.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(cleaned, str(dest))
    return dest, rewrites


def _compress(module, config: BuildConfig, profiles: list[TargetProfile], data, tmp: Path, rep: Reporter):
    """Run the compress stage; also export the unpruned model, which the report compares with."""
    from .stages.compress import CompressionData, compress  # torch-only stage
    from .stages.export import export_torch

    m, d, dcfg = config.model, config.data, config.compress.distill
    calib, evalset, _ = data
    ((_, input_shape, _),) = m.declared_inputs()
    train, train_source = None, "calibration data"
    if dcfg is not None and dcfg.data:
        spec = _declared_specs(config)
        with rep.stage("loading distillation data"):
            train = load_dataset(dcfg.data, spec, x_key=d.x_key, y_key=d.y_key, preprocess=d.preprocess,
                                 limit=dcfg.samples, role="distillation")
        train_source = config.portable_path(train.source)
    with rep.stage("exporting the unpruned model (the comparison baseline)") as tick:
        raw = export_torch(module, m.declared_inputs(), tmp / "unpruned.exported.onnx", opset=m.opset, progress=tick)
        unpruned = tmp / "unpruned.float.onnx"
        onnx.save(speed_rewrites(clean_float_graph(load_onnx(raw), m.torch, m.shape_overrides()))[0], str(unpruned))
    result = compress(module, config.compress, rep, data=CompressionData(
        input_shape=tuple(input_shape), calibration_x=calib.x, calibration_y=calib.y,
        eval_x=evalset.x, eval_y=evalset.y,
        train_x=None if train is None else train.x, train_y=None if train is None else train.y,
        train_source=train_source, round_to=profiles[0].round_to))
    return result.module, {"record": result.record, "unpruned_onnx": unpruned}


def _measure_compression(compression: dict, float_path: Path, evalset: Dataset, profiles, config: BuildConfig,
                         rep: Reporter) -> dict:
    from .verification.compression import measure_compression

    with rep.stage("measuring the compressed float model against the unpruned one"):
        return measure_compression(compression["record"], compression["unpruned_onnx"], float_path, evalset.calls,
                                   evalset.y,
                                   threads=config.verify.host_threads or profiles[0].threads,
                                   warmup=config.verify.warmup_runs, min_runs=config.verify.latency_runs)


def _target(config: BuildConfig, profile: TargetProfile, float_path: Path, int8: Int8Graphs, emit_cache: dict,
            calib: Dataset, base: Baseline, evalset: Dataset, root: Path, source: str, rep: Reporter,
            int8_floor: dict[str, int]) -> TargetEntry:
    """Emit and verify one target's artifacts; its manifest entry.

    Float artifacts come first: an operator a format cannot express is found there, in
    seconds, and that format's int8 artifact is then not attempted (nor calibrated for)."""
    settings = resolve_settings(profile, config.quantization)
    target_dir = root / profile.name
    target_dir.mkdir()
    float_kinds = [k for k in profile.artifacts if k not in INT8_KINDS]
    int8_kinds = [k for k in profile.artifacts if k in INT8_KINDS]
    with rep.stage(f"{profile.name}: writing {', '.join(float_kinds) or 'no float artifacts'}") as tick:
        graphs = GraphSet(float_onnx=float_path, calibration=calib, quant_settings=settings, cache=emit_cache,
                          progress=tick, source=source)
        artifacts, missing = emit_kinds(float_kinds, graphs, profile, target_dir)
    refused = {m["kind"].split("-", 1)[0]: m for m in missing if m["op"]}
    for kind in [k for k in int8_kinds if k.split("-", 1)[0] in refused]:
        missing.append({**refused[kind.split("-", 1)[0]], "kind": kind})
    int8_kinds = [k for k in int8_kinds if k.split("-", 1)[0] not in refused]
    qdq = None
    if int8_kinds:
        try:
            qdq, ranges = int8.get(settings)
        except ModelError as exc:  # the ONNX quantiser's refusal costs every int8 artifact of this target
            missing += [not_produced(k, exc) for k in int8_kinds]
            int8_kinds = []
        else:
            if "ort-int8" in int8_kinds and not quantized_ops(qdq)["quantized_nodes"]:
                # e.g. a model whose whole body sits inside an If (ONNX Runtime's quantiser
                # does not enter subgraphs): the "int8" file would be the float model
                nothing = ModelError(f"{source}: ONNX Runtime's quantiser quantised no node of this graph (its "
                                     "computation sits inside If/Loop subgraphs, which it does not enter, or uses "
                                     "no op it quantises); an int8 file would be the float model")
                missing.append(not_produced("ort-int8", nothing))
                int8_kinds = [k for k in int8_kinds if k != "ort-int8"]
            if "ort-int8" in int8_kinds:
                shutil.copyfile(qdq, target_dir / "model.int8.qdq.onnx")
                qdq = target_dir / "model.int8.qdq.onnx"
    if int8_kinds:
        with rep.stage(f"{profile.name}: writing {', '.join(int8_kinds)}") as tick:
            graphs = GraphSet(float_onnx=float_path, int8_qdq=qdq, calibration=calib, quant_settings=settings,
                              ranges=ranges, cache=emit_cache, progress=tick, source=source)
            produced, failed = emit_kinds(int8_kinds, graphs, profile, target_dir)
        artifacts += produced
        missing += failed
    gates = profile.gates.model_dump()
    gates.update({k: v for k, v in config.gates.model_dump().items() if v is not None})
    if config.task is not None:
        gates["task"] = config.task.task_gates(base.task)
        if config.task.name != "classification" and config.gates.min_sqnr_db is None:
            # one SQNR over a whole output misjudges what is not a classifier (a detector's box
            # coordinates drown its class scores): the task's gates judge it instead
            gates["min_sqnr_db"] = None
    with rep.stage(f"{profile.name}: verifying {len(artifacts)} artifacts") as tick:
        done = iter(range(1, len(artifacts) + 1))
        entry = verify_target(profile, artifacts, base, evalset.calls, evalset.y, root, gates=gates,
                              float_onnx=float_path, warmup=config.verify.warmup_runs, runs=config.verify.latency_runs,
                              threads=config.verify.host_threads,
                              input_layouts={n: config.model.layout_of(n, a.ndim - 1)
                                             for n, a in evalset.calls.items()},
                              weight_bytes=weight_bytes, quantized_fraction=quantized_ops, int8_floor=int8_floor,
                              on_artifact=lambda a: tick(next(done) - 1, len(artifacts)))
        tick(len(artifacts), len(artifacts))
    verify = functools.partial(verify_target, profile, baseline=base, calls=evalset.calls, labels=evalset.y,
                               gates=gates, float_onnx=float_path, warmup=config.verify.warmup_runs,
                               runs=config.verify.latency_runs, threads=config.verify.host_threads,
                               input_layouts={n: config.model.layout_of(n, a.ndim - 1)
                                              for n, a in evalset.calls.items()},
                               weight_bytes=weight_bytes, quantized_fraction=quantized_ops, int8_floor=int8_floor,
                               float_refs={a.runtime: a.path for a in artifacts if a.precision == "float32"})
    make = functools.partial(_make_artifact, profile=profile, float_path=float_path, int8=int8, emit_cache=emit_cache,
                             calib=calib, source=source)
    if qdq is not None and "ort-int8" in int8_kinds and config.search.diagnose:
        _diagnose(entry, qdq, float_path, calib, rep, profile.name, emit_cache, settings.key())
    entry["search"] = _search(entry, config, profile, settings, float_path, target_dir, verify, make, rep, root,
                              int8.work_dir, ranges=int8.get(settings)[1] if qdq is not None else None)
    with rep.stage(f"{profile.name}: quantised artifacts against float, alternating runs"):
        _head_to_head(entry, root, profile, evalset.calls, config)
    _slowdown_causes(entry, float_path, root, profile)
    order = {k: i for i, k in enumerate(profile.artifacts)}
    entry["artifacts"].sort(key=lambda a: order.get(a["kind"], len(order)))
    required = set(config.verify.required_artifacts or profile.required_artifacts or profile.artifacts)
    entry["not_produced"] = [{**m, "required": m["kind"] in required}
                             for m in sorted(missing, key=lambda m: order.get(m["kind"], len(order)))]
    entry["quantization_settings"] = settings.__dict__ if qdq is not None else None
    return TargetEntry.model_validate(entry)


def _make_artifact(kind: str, settings, out_dir: Path, *, profile: TargetProfile, float_path: Path, int8: Int8Graphs,
                   emit_cache: dict, calib: Dataset, source: str):
    """Quantise with `settings` (when `kind` needs it) and write one artifact of `kind` into
    `out_dir`; raises ModelError when it cannot be produced."""
    qdq, ranges = int8.get(settings)
    if kind == "ort-int8":
        shutil.copyfile(qdq, out_dir / "model.int8.qdq.onnx")
        qdq = out_dir / "model.int8.qdq.onnx"
    graphs = GraphSet(float_onnx=float_path, int8_qdq=qdq, calibration=calib, quant_settings=settings, ranges=ranges,
                      cache=emit_cache, source=source)
    produced, failed = emit_kinds([kind], graphs, profile, out_dir)
    if failed:
        raise ModelError(failed[0]["reason"])
    return produced[0]


def _diagnose(entry: dict, qdq: Path, float_path: Path, calib: Dataset, rep: Reporter, target: str, cache: dict,
              key: str) -> None:
    """The per-node diagnosis of the target's ONNX int8 graph, on its ort-int8 entry (once per
    distinct int8 graph: targets with the same quantisation settings share it)."""
    from .verification.diagnosis import diagnose

    art = next((a for a in entry["artifacts"] if a["kind"] == "ort-int8"), None)
    if art is None:
        return
    if ("diagnosis", key) not in cache:
        with rep.stage(f"{target}: per-node diagnosis of the int8 graph") as tick:
            # 4 calls and a minute at most: a 1024x1024 detector takes ~40 s and 4.5 GB per call here
            cache[("diagnosis", key)] = diagnose(float_path, qdq, calib.calls, max_calls=4, time_budget_s=60,
                                                 progress=tick)
    art["diagnosis"] = cache[("diagnosis", key)]


def _search(entry: dict, config: BuildConfig, profile: TargetProfile, settings, float_path: Path, target_dir: Path,
            verify, make, rep: Reporter, root: Path, work_dir: Path, ranges: dict | None = None) -> dict | None:
    """The accuracy-aware search for each int8 artifact that fails an accuracy or task gate
    (edgepack.search); the trial that holds the gates replaces it, a remedy in another
    number format that holds them is added beside it. Returns the manifest's search record."""
    from typing import get_args

    from . import search as policy
    from .targets import ArtifactKind

    budget = policy.Budget(config.search.max_trials, config.search.max_seconds)
    if budget.max_trials == 0:
        return None
    known = set(get_args(ArtifactKind))
    present = {a["kind"] for a in entry["artifacts"]}
    logs = []
    for i, first in enumerate(list(entry["artifacts"])):
        kind = first["kind"]
        if kind not in policy.REMEDIES or not policy.fails_accuracy(first):
            continue
        ranked = [(n["name"], n["op"], n["sqnr_db"]) for n in (first.get("diagnosis") or {}).get("nodes", [])
                  if isinstance(n.get("sqnr_db"), (int, float)) and math.isfinite(n["sqnr_db"])]
        float_model = onnx.load(str(float_path), load_external_data=False)
        moves = policy.int8_moves(kind, float_model, ranked, ranges=ranges)
        remedies = [k for k in policy.REMEDIES[kind] if k in known and k not in present]
        first_reason = policy.remedies_first(kind, float_model)
        scratch = Path(tempfile.mkdtemp(prefix=f"search-{profile.name}-{kind}-", dir=work_dir))
        count = iter(range(1, 1000))

        def evaluate(cand, scratch=scratch, count=count):
            d = scratch / str(next(count))
            d.mkdir()
            return verify([make(cand.kind, cand.settings, d)], root=d)["artifacts"][0]

        try:
            with rep.stage(f"{profile.name}: {kind} fails a gate; searching (at most {budget.max_trials} trials, "
                           f"{budget.max_seconds:.0f} s)") as tick:
                log = policy.run_search(first, settings, kind=kind, moves=moves, remedies=remedies,
                                        evaluate=evaluate, budget=budget, progress=tick,
                                        remedies_first=first_reason)
            if log["chosen"] is not None:
                trial = log["trials"][log["chosen"]]
                chosen = _settings_of(settings, trial["settings"])
                adopted = verify([make(kind, chosen, target_dir)], root=root)["artifacts"][0]
                adopted["quantization"] = {**adopted["quantization"], "search_trial": log["chosen"],
                                           "search_change": trial["name"], "settings": trial["settings"],
                                           "kept_float": {k: v for t in log["trials"][:log["chosen"] + 1]
                                                          for k, v in t["kept_float"].items()
                                                          if k in chosen.keep_float}}
                if first.get("diagnosis"):
                    adopted["diagnosis"] = {**first["diagnosis"],
                                            "graph": "the profile's int8 graph, before the search"}
                entry["artifacts"][i] = adopted
            for t in log["added"]:
                trial = log["trials"][t]
                added = verify([make(trial["kind"], _settings_of(settings, trial["settings"]), target_dir)],
                               root=root)["artifacts"][0]
                added["quantization"] = {**added["quantization"], "search_trial": t,
                                         "search_change": f"added by the search: {kind} did not hold the gates"}
                entry["artifacts"].append(added)
                present.add(trial["kind"])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        logs.append(log)
    return {"trials": [t for log in logs for t in log["trials"]], "runs": [
        {k: v for k, v in log.items() if k != "trials"} for log in logs]} if logs else None


# alternating rounds of a quantised artifact against its float one (each round runs both once)
HEAD_TO_HEAD_ROUNDS = (5, 30)


def _head_to_head(entry: dict, root: Path, profile: TargetProfile, calls: dict, config: BuildConfig) -> None:
    """Each passing quantised artifact against its runtime's float artifact, in alternating
    runs (verification.host.head_to_head): the default-artifact choice reads this ratio, not
    two p50s measured apart while the host's load may have changed (a 1024x1024 detector's
    16-bit artifact measured 0.75x float apart and 1.68x alternating, on a loaded host)."""
    from .verification.host import head_to_head
    from .verification.metrics import first_call
    from .verification.select import RESEARCH

    floats = {a["runtime"]: a for a in entry["artifacts"] if a["precision"] == "float32"}
    lo, hi = HEAD_TO_HEAD_ROUNDS
    rounds = max(lo, min(config.verify.latency_runs, hi))
    feed = first_call(calls)
    for a in entry["artifacts"]:
        f = floats.get(a["runtime"])
        if f is None or a is f or a["precision"] in RESEARCH or not a["metrics"]["passed"]:
            continue
        got = head_to_head(root / a["path"], a.get("layout"), root / f["path"], f.get("layout"), feed,
                           threads=config.verify.host_threads or profile.threads, rounds=rounds)
        a["metrics"]["head_to_head"] = {"against": f["kind"], **got}


def _vs_float(a: dict, floats: dict) -> float | None:
    """A quantised artifact's latency over its runtime's float artifact's: the alternating
    measurement when there is one, else the two p50s."""
    h = a["metrics"].get("head_to_head")
    if h:
        return h["ratio"]
    f = floats.get(a["runtime"])
    return a["metrics"]["latency"]["p50_ms"] / f if f else None


def _slowdown_causes(entry: dict, float_path: Path, root: Path, profile: TargetProfile) -> None:
    """For each quantised artifact not faster than its runtime's float one (see
    verification.select), what in its graph costs speed."""
    from .verification.select import SAME_SPEED

    floats = {a["runtime"]: a["metrics"]["latency"]["p50_ms"] for a in entry["artifacts"]
              if a["precision"] == "float32"}
    for a in entry["artifacts"]:
        ratio = _vs_float(a, floats)
        if ratio is None or a["precision"] == "float32" or ratio < 1 - SAME_SPEED:
            continue
        if a["runtime"] == "onnxruntime" and a.get("reference_graph"):
            a["slowdown_causes"] = int8_slowdown_causes(float_path, root / a["reference_graph"]["path"],
                                                        target_platform=profile.ort.target_platform)
        elif a["quantization"].get("float_ops"):
            a["slowdown_causes"] = [f"ops LiteRT's quantiser left float, with QUANTIZE/DEQUANTIZE around them: "
                                    f"{', '.join(a['quantization']['float_ops'])}"]
        else:
            a["slowdown_causes"] = ["every op is quantised: the runtime's int8 kernels for these ops are slower than "
                                    "its float ones on this CPU"]


def _settings_of(base, recorded: dict):
    """QuantSettings from a trial record's settings."""
    import dataclasses

    return dataclasses.replace(base, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in recorded.items()})


def _emulate_targets(manifest: Manifest, profiles, root: Path, rep: Reporter) -> Manifest:
    """Device-exact numbers for every target of another ISA, merged into the manifest."""
    from .manifest.models import DeviceResult
    from .verification.emulate import prepare_userland, run_device_runner
    from .verification.merge import merge_device_result

    for profile in profiles:
        if profile.cpu.arch == host_arch():
            continue
        with rep.stage(f"{profile.name}: preparing the emulated {profile.cpu.model} userland") as tick:
            userland = prepare_userland(profile, progress=tick)
        with rep.stage(f"{profile.name}: device-exact verification under emulation"):
            result = DeviceResult.model_validate(run_device_runner(userland, root, profile.name))
        manifest = merge_device_result(manifest, result, merged_utc=_now())
    return manifest


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
