"""The typed manifest contract (host side).

Every manifest the build writes is a `Manifest`; every device runner result the host merges
is validated as a `DeviceResult`. The JSON Schemas shipped beside this module are generated
from these classes (`python -m edgepack.manifest.schema`), and a test keeps them in step.

Unknown fields are refused (a typo in a hand-edited manifest is an error, not a silent
default). Free-form parts are marked as such: a target's profile is the `TargetProfile` it
was built with, and the compression record is the compress stage's own measurement dict.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    WithJsonSchema,
)

from ..safepath import relative_path_problem
from ..targets import TargetProfile
from .jsonio import DEVICE_RESULT_SCHEMA, MANIFEST_SCHEMA, NON_FINITE


def _parse_float(v):
    return float(v) if isinstance(v, str) and v in NON_FINITE else v


def _dump_float(v: float):
    if math.isfinite(v):
        return v
    return "inf" if v > 0 else ("-inf" if v < 0 else "nan")


# A float that may be non-finite (an SQNR of identical outputs is +inf): in JSON a number
# or one of the strings "inf", "-inf", "nan".
Num = Annotated[
    float,
    BeforeValidator(_parse_float),
    PlainSerializer(_dump_float, when_used="json"),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"enum": list(NON_FINITE)}]}),
]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# relative, posix; no empty, '.' or '..' part, backslash, colon (drive letters) or control character
BUNDLE_PATH_PATTERN = r"^(?!/)(?!.*//)(?!.*/$)(?!(.*/)?\.\.?(/|$))[^\\:\x00-\x1f\x7f]+$"


def _inside_bundle(v: str) -> str:
    why = relative_path_problem(v)
    if why:
        raise ValueError(f"{v!r} is not a relative path inside the bundle: it {why}")
    return v


# A path inside the bundle: relative, posix, never climbing out.
BundlePath = Annotated[str, AfterValidator(_inside_bundle),
                       WithJsonSchema({"type": "string", "pattern": BUNDLE_PATH_PATTERN})]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FileRef(_Model):
    path: BundlePath
    sha256: Sha256
    size_bytes: int = Field(ge=0)


class Tensor(_Model):
    """A model input or output as the ONNX graph declares it."""

    name: str
    shape: list[int | str]
    dtype: str
    layout: str | None = None


class IOTensor(_Model):
    """An artifact's own input or output tensor (its layout, its dtype; for integer I/O the
    real value is (q - zero_point) * scale)."""

    name: str
    shape: list[int | str]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None


class LayoutEntry(_Model):
    name: str
    layout: str
    perm: list[int] = Field(description="the artifact's tensor is the ONNX value transposed by perm")


class Layout(_Model):
    inputs: list[LayoutEntry]
    outputs: list[LayoutEntry]


class OutputNumerics(_Model):
    """One model output of an artifact against the same output of the float model."""

    name: str
    sqnr_db: Num
    cosine: Num
    max_abs_error: Num


class TaskMetric(_Model):
    value: Num
    direction: Literal["higher", "lower"]
    unit: str = ""
    note: str = ""


class Numerics(_Model):
    """One artifact's outputs against the float reference outputs on the evaluation data.

    The top-level numbers are the classification view of output 0; `outputs` measures every
    output on its own, and `task` holds the model task's metrics (detections matched to
    float, mask IoU, embedding cosine, decoded sequences, ...)."""

    samples: int
    top1_agreement: Num = Field(description="percent of samples where artifact and float pick the same class")
    sqnr_db: Num
    max_abs_error: Num
    top1: Num | None = None
    top5: Num | None = None
    outputs: list[OutputNumerics] = []
    task: dict[str, TaskMetric] = {}
    # Set on device-exact numbers merged from a device run.
    measured_on: str | None = None
    runtime: str | None = None
    emulated: bool | None = None


class BaselineMetrics(_Model):
    samples: int
    top1: Num | None = None
    top5: Num | None = None


class Latency(_Model):
    runs: int = Field(ge=1)
    warmup: int = Field(ge=0)
    threads: int = Field(ge=1)
    p50_ms: float = Field(ge=0)
    p90_ms: float = Field(ge=0)
    p99_ms: float = Field(ge=0)
    mean_ms: float = Field(ge=0)
    measured_on: str
    cpu: str
    arch: str
    profile_threads: int | None = None


class GateVerdict(_Model):
    """One gate applied to one artifact. `passed` is None when the gate could not be judged
    from these numbers (reported, never silently dropped; it does not fail the build)."""

    gate: str
    metric: str = Field(description="the measured quantity, e.g. top1_drop, sqnr_db, weight_ratio, latency_p50_ms")
    direction: Literal["higher", "lower"] = Field(description="which way is better for the metric")
    threshold: float
    value: Num | None
    passed: bool | None
    note: str = ""


class DeviceRun(_Model):
    """A device run whose numbers are not device-exact (kept for comparison, not gated)."""

    where: str
    runtime: str | None = None
    numerics: dict[str, Numerics] | None = None
    note: str


class DeviceFailure(_Model):
    """Something a device run found wrong with this artifact."""

    where: str
    runtime: str | None = None
    reason: str


class HeadToHead(_Model):
    """A quantised artifact against its runtime's float artifact in alternating runs on this
    host (one of each per round, the profile's threads): robust to the load drifting between
    two separate latency measurements, which the default-artifact choice reads."""
    against: str = Field(description="the float artifact's kind")
    ratio: float = Field(description="median of this artifact's runs / median of the float artifact's runs")
    rounds: int
    threads: int
    p50_ms: float
    float_p50_ms: float


class ArtifactMetrics(_Model):
    numerics: dict[str, Numerics] = Field(description="by whose numbers: host, reference, device-exact")
    gate_numerics: str = Field(description="the key of `numerics` the gates read")
    latency: Latency
    head_to_head: HeadToHead | None = None
    host_is_target_isa: bool
    gates: list[GateVerdict]
    passed: bool
    runtime_version: str
    device_latency: Latency | None = None
    device_runs: list[DeviceRun] = []
    device_failures: list[DeviceFailure] = []


class QuantizedOps(_Model):
    compute_nodes: int
    quantized_nodes: int
    float_op_types: list[str]


class ArtifactEntry(_Model):
    kind: str
    path: BundlePath
    sha256: Sha256
    size_bytes: int
    runtime: str
    precision: str
    weight_bytes: int = Field(description="stored constant payload (see edgepack.inspection)")
    size_ratio: float = Field(description="file bytes vs the float artifact of the same runtime")
    weight_ratio: float = Field(description="weight bytes vs the float artifact of the same runtime")
    int8_size_ratio: float | None = Field(None, description="weight bytes vs the model's theoretical int8 size "
                                                            "in its runtime's format (model.int8_floor_bytes)")
    files: list[FileRef] = Field(description="files the artifact needs beside it")
    reference_graph: FileRef | None = Field(description="the QDQ ONNX graph whose math the artifact implements")
    inputs: list[IOTensor]
    outputs: list[IOTensor]
    layout: Layout
    quantization: dict[str, Any] = Field(description="the writer's quantisation record (scheme, settings, I/O params)")
    quantized_ops: QuantizedOps | None = None
    diagnosis: dict[str, Any] | None = Field(None, description="per-node quantisation error of its ONNX int8 "
                                                              "graph (edgepack.verification.diagnosis)")
    slowdown_causes: list[str] = Field([], description="for a quantised artifact: what in its graph costs speed "
                                                       "(float islands between Q/DQ, ops without int8 kernels)")
    metrics: ArtifactMetrics

    def files_to_check(self) -> list[FileRef]:
        own = FileRef(path=self.path, sha256=self.sha256, size_bytes=self.size_bytes)
        return [own, *self.files, *([self.reference_graph] if self.reference_graph else [])]


class TaskGate(_Model):
    metric: str
    direction: Literal["higher", "lower"]
    threshold: float


class TaskSpec(_Model):
    """The model's task and its options (see edgepack.verification.tasks)."""

    name: str
    options: dict[str, Any] = {}


class GateThresholds(_Model):
    task: list[TaskGate] = Field([], description="gates on the task's metrics")
    max_accuracy_drop: float | None = None
    min_sqnr_db: float | None = None
    max_latency_ms: float | None = None
    max_int8_size_ratio: float | None = None
    max_weight_ratio: float | None = None
    max_size_ratio: float | None = None


class NotProduced(_Model):
    """An artifact the profile asks for that could not be produced: the format cannot express
    an operator, or a quantiser refused the model. The other artifacts are built regardless."""

    kind: str
    reason: str
    node: str | None = Field(None, description="the graph node that stopped it, when one did")
    op: str | None = Field(None, description="that node's operator")
    required: bool = Field(description="whether the release needs it (profile or config required_artifacts)")


class SearchTrial(_Model):
    """One candidate of the accuracy-aware search (edgepack.search), as measured."""

    index: int = Field(description="0: the artifact as built with the profile's settings")
    name: str
    why: str
    kind: str = Field(description="the artifact kind the candidate produces")
    settings: dict[str, Any]
    kept_float: dict[str, str] = Field(description="nodes this trial added to those kept float, with the reason")
    seconds: float
    error: str | None = Field(description="why the candidate could not be produced, when it could not")
    passed: bool | None = Field(description="whether it holds every gate but latency (accuracy, task, size)")
    failed_gates: list[str]
    metrics: dict[str, float] = Field(description="its gated metrics (and top1 / SQNR) by name")
    latency_p50_ms: float | None
    size_bytes: int | None


class SearchRun(_Model):
    kind: str = Field(description="the int8 artifact that failed a gate")
    budget: dict[str, Any]
    stopped: str = Field(description="why the search stopped")
    chosen: int | None = Field(description="the trial now shipped as that artifact (None: the one as built)")
    added: list[int] = Field(description="trials in another number format added as artifacts because they pass")
    remedies_first: str | None = Field(default=None, description="why the other number formats were tried before "
                                       "the int8 choices (none of these can reach the cause); None: int8 first")
    seconds: float


class SearchRecord(_Model):
    trials: list[SearchTrial]
    runs: list[SearchRun]


class DefaultChoice(_Model):
    """The artifact a target ships by default: the fastest that passes its gates
    (edgepack.verification.select), and why."""

    kind: str | None = Field(description="the artifact kind; None when no artifact passes")
    path: BundlePath | None = None
    basis: str = Field(description="whose latency ranked the artifacts: the device's or this host's")
    reason: str
    per_runtime: dict[str, str] = Field({}, description="the fastest passing artifact of each runtime")
    notes: list[str] = Field([], description="quantised artifacts not faster than their runtime's float one, "
                                             "with the ratio and the causes found")


class TargetEntry(_Model):
    profile: TargetProfile
    threads: int
    gates: GateThresholds = Field(description="the thresholds in force: profile defaults with config overrides")
    quantization_settings: dict[str, Any] | None = None
    artifacts: list[ArtifactEntry]
    not_produced: list[NotProduced] = []
    passed: bool
    default: DefaultChoice | None = Field(None, description="the artifact to ship for this target")
    search: SearchRecord | None = Field(None, description="the accuracy-aware search, when an int8 artifact "
                                                          "failed an accuracy or task gate")

    def artifact(self, kind: str) -> ArtifactEntry:
        for a in self.artifacts:
            if a.kind == kind:
                return a
        raise KeyError(kind)


class Failure(_Model):
    """Why a bundle is marked failed: one gate, one device finding, or one bundle-level problem."""

    source: Literal["gate", "device", "bundle", "build"]
    target: str | None = None
    artifact: str | None = None
    gate: str | None = None
    where: str | None = Field(None, description="for device failures: the device or emulator")
    runtime: str | None = None
    reason: str

    def text(self) -> str:
        subject = "/".join(p for p in (self.target, self.artifact) if p) or "bundle"
        on = f" on {self.where}" if self.where else ""
        rt = f" ({self.runtime})" if self.runtime else ""
        return f"{subject}{on}{rt}: {self.reason}"


class Problem(_Model):
    """A device runner finding: a file that is missing or altered, a golden mismatch, a
    runtime that is not installed, ... `target`/`artifact` are set when it concerns one."""

    where: str = Field(description="the file or target/artifact concerned")
    reason: str
    target: str | None = None
    artifact: str | None = None


class DeviceRecord(_Model):
    """One merged device run, as the manifest keeps it."""

    merged_utc: str
    where: str
    runner: dict[str, Any]
    emulation: dict[str, Any] | None = None
    problems: list[Problem] = []
    device_exact: bool
    passed: bool
    signed: bool = Field(False, description="whether the device result carried a signature that was checked; "
                                            "reports label unsigned device results as such")


class HostInfo(_Model):
    cpu: str
    arch: str
    cores: int
    isa: list[str]
    os: str
    python: str


class Source(_Model):
    kind: Literal["onnx", "torch", "pt2"]
    path: str = Field(description="as the config gave it, relative to the config's folder")
    sha256: Sha256 | None = Field(None, description="of the model file (the .py file for a torch factory)")


class ModelInfo(_Model):
    task: TaskSpec | None = None
    inputs: list[Tensor]
    outputs: list[Tensor]
    batch: int
    parameters: int
    op_counts: dict[str, int]
    graph_rewrites: list[str] = Field([], description="numerically equivalent rewrites of the cleaned float graph "
                                                     "that let int8 fuse (edgepack.stages.rewrite)")
    int8_floor_bytes: dict[str, int] | None = Field(
        None, description="by runtime, the theoretical int8 size of the float graph's constants: 1 B per weight, a "
                          "4 B scale and a zero point (1 B in ONNX, 8 B in TFLite) per channel, int32 biases, other "
                          "constants as stored")


class Baseline(FileRef):
    runtime: str
    precision: str
    metrics: BaselineMetrics
    measured_on: str


class DataFile(_Model):
    source: str = Field(description="as the config gave it, relative to the config's folder")
    sha256: Sha256 | None = Field(None, description="of the file; None for a folder or a Python entry point")
    samples: int


class EvaluationData(DataFile):
    labelled: bool
    note: str


class DataInfo(_Model):
    calibration: DataFile
    evaluation: EvaluationData


class Golden(_Model):
    inputs: FileRef
    reference_outputs: FileRef
    samples: int
    note: str


class ReferenceData(_Model):
    eval: FileRef
    eval_reference_outputs: FileRef


class Manifest(_Model):
    schema_: Literal[MANIFEST_SCHEMA] = Field(MANIFEST_SCHEMA, alias="schema")  # type: ignore[valid-type]
    name: str
    version: str
    status: Literal["passed", "failed"]
    created_utc: str = Field(description="when it was built: SOURCE_DATE_EPOCH when set, else the build's time")
    reproducible_sha256: Sha256 | None = Field(
        None, description="sha256 of the canonical JSON of this manifest without its non-reproducible fields "
                          "(edgepack.manifest.reproducible: times, host, latency); the same for two builds of the "
                          "same inputs and tool versions")
    config_hash: Sha256 = Field(description="sha256 of the config with paths relative to its folder")
    config: dict[str, Any] = Field(description="the build config, paths relative to its folder")
    tools: dict[str, str | None]
    host: HostInfo
    source: Source
    model: ModelInfo
    baseline: Baseline
    compression: dict[str, Any] | None = Field(None, description="the compress stage's measurements")
    data: DataInfo
    golden: Golden
    reference_data: ReferenceData
    targets: dict[str, TargetEntry]
    gates_passed: bool
    failures: list[Failure]
    device_results: list[DeviceRecord] = []

    def collect_failures(self) -> list[Failure]:
        """Every reason this bundle fails, derived from the recorded verdicts and device runs."""
        out: list[Failure] = []
        for tname, t in self.targets.items():
            for n in t.not_produced:
                if n.required:
                    out.append(Failure(source="build", target=tname, artifact=n.kind,
                                       reason=f"not produced: {n.reason}"))
            for a in t.artifacts:
                m = a.metrics
                for v in m.gates:
                    if v.passed is False:
                        bound = "≥" if v.direction == "higher" else "≤"
                        out.append(Failure(source="gate", target=tname, artifact=a.kind, gate=v.gate,
                                           reason=f"{v.gate}: {v.metric} = {_fmt(v.value)}, "
                                                  f"needs {bound} {v.threshold}"))
                for f in m.device_failures:
                    out.append(Failure(source="device", target=tname, artifact=a.kind, where=f.where,
                                       runtime=f.runtime, reason=f.reason))
        for rec in self.device_results:
            for p in rec.problems:
                if p.artifact is None:  # artifact problems are in that artifact's device_failures
                    out.append(Failure(source="device", target=p.target, where=rec.where,
                                       reason=f"{p.where}: {p.reason}"))
        return out

    def with_verdict(self) -> "Manifest":
        """A copy whose failures, gates_passed and status follow from its contents."""
        failures = self.collect_failures()
        targets = {}
        for tname, t in self.targets.items():
            artifacts = []
            for a in t.artifacts:
                ok = all(v.passed is not False for v in a.metrics.gates) and not a.metrics.device_failures
                artifacts.append(a.model_copy(update={"metrics": a.metrics.model_copy(update={"passed": ok})}))
            bundle_level = any(f.target == tname and (f.artifact is None or f.source == "build") for f in failures)
            targets[tname] = t.model_copy(update={"artifacts": artifacts,
                                                  "passed": (all(a.metrics.passed for a in artifacts)
                                                             and not bundle_level)})
        passed = not failures
        return self.model_copy(update={"targets": targets, "failures": failures, "gates_passed": passed,
                                       "status": "passed" if passed else "failed"})

    def to_json(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---------------------------------------------------------------------------------------
# The device runner's result (written numpy-only by edgepack.verification.device as plain JSON)


class DeviceArtifactResult(_Model):
    kind: str
    path: BundlePath
    passed: StrictBool
    error: str | None = Field(None, description="why the artifact could not be checked or run")
    runtime: str | None = None
    numerics: dict[str, Numerics] | None = None
    gate_numerics: str | None = None
    golden: Numerics | None = None
    golden_ok: StrictBool | None = None
    metrics: Numerics | None = None
    baseline: BaselineMetrics | None = None
    latency: Latency | None = None
    gates: list[GateVerdict] | None = None


class DeviceTargetResult(_Model):
    artifacts: list[DeviceArtifactResult]
    passed: StrictBool


class DeviceResult(_Model):
    schema_: Literal[DEVICE_RESULT_SCHEMA] = Field(DEVICE_RESULT_SCHEMA, alias="schema")  # type: ignore[valid-type]
    bundle: str = Field(description="<name>-<version> of the bundle that was run")
    runner: dict[str, Any] = Field(description="the machine that ran it (host info, emulated CPU)")
    emulation: dict[str, Any] | None = None
    artifacts_filter: list[str] | None = Field(None, description="the artifact kinds asked for; None: all")
    targets: dict[str, DeviceTargetResult]
    problems: list[Problem]
    passed: StrictBool
    checksums: dict[BundlePath, Sha256] | None = Field(
        None, description="sha256 of every bundle file the runner checked, by path (merge refuses a result whose "
                          "checksums are not the bundle's, or that has none)")
