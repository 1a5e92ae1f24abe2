"""Static int8 quantisation of the float graph with ONNX Runtime's quantiser (QDQ format).

Calibration methods are small classes with one job (translate edgepack's settings into
ONNX Runtime's calibrator options); add one to `CALIBRATORS` to make it selectable.
Targets with identical settings share one quantised graph.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ConfigError
from . import transformer
from .data import Dataset

Progress = Callable[[int, int], None]


class OrtCalibrator:
    """Base: ranges measured by ONNX Runtime's own calibrator for this method."""

    name = ""

    def ort_method(self):
        raise AttributeError

    def extra_options(self, settings: "QuantSettings") -> dict:
        return {}

    def collect(self, float_path: Path, dataset: Dataset, settings: "QuantSettings", progress=None, source=None):
        from onnxruntime.quantization.calibrate import create_calibrator

        extra = {"symmetric": settings.symmetric_activations}
        for k, v in self.extra_options(settings).items():
            extra[{"CalibPercentile": "percentile", "CalibNumBins": "num_bins",
                   "CalibNumQuantizedBins": "num_quantized_bins"}[k]] = v
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), _quiet(), \
                _as_model_error(source or float_path):
            calibrator = create_calibrator(Path(float_path), [], augmented_model_path=str(Path(tmp, "augmented.onnx")),
                                           calibrate_method=self.ort_method(), extra_options=extra)
            _finite_histograms(calibrator)
            calibrator.collect_data(_Reader(dataset, progress))
            return calibrator.compute_data()


def _finite_histograms(calibrator) -> None:
    """ONNX Runtime's histogram collector (percentile, entropy) fails on a tensor holding
    ±inf ("supplied range of [-inf, inf] is not finite"): an attention-mask fill of -inf
    reaches the masked scores (all-MiniLM-L6-v2). Give it the tensors with ±inf clamped to
    the finite extremes of their own values (NaN to 0): a range cannot hold infinity anyway,
    and the finite values are what the scale is for."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    if not hasattr(calibrator, "num_bins"):  # not a histogram calibrator
        return
    collector = HistogramCollector(method=calibrator.method, symmetric=calibrator.symmetric,
                                   num_bins=calibrator.num_bins, num_quantized_bins=calibrator.num_quantized_bins,
                                   percentile=calibrator.percentile, scenario=getattr(calibrator, "scenario", "same"))
    collect = collector.collect

    def finite(arrays):
        out = []
        for a in arrays:
            a = np.asarray(a)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                ok = a[np.isfinite(a)]
                lo, hi = (float(ok.min()), float(ok.max())) if ok.size else (0.0, 0.0)
                a = np.nan_to_num(a, nan=0.0, posinf=hi, neginf=lo)
            out.append(a)
        return out

    collector.collect = lambda name_to_arr: collect({k: finite(v) for k, v in name_to_arr.items()})
    calibrator.collector = collector


class MinMaxCalibrator(OrtCalibrator):
    """Global min/max of every float tensor over the calibration set.

    Same definition as ONNX Runtime's MinMax calibrator (and TFLite's), measured faster:
    its calibrator runs the graph with every optimisation off (43 ms per MobileNetV2
    sample here); this adds ReduceMin/ReduceMax nodes and keeps optimisations on, single
    threaded (16 ms per sample), which is what scripts/bench_pipeline.py times.
    """

    name = "minmax"

    def ort_method(self):
        from onnxruntime.quantization import CalibrationMethod

        return CalibrationMethod.MinMax

    def collect(self, float_path: Path, dataset: Dataset, settings: "QuantSettings", progress=None, source=None):
        import onnxruntime as ort
        from onnx import helper
        from onnxruntime.quantization.calibrate import TensorsData

        model = onnx.load(str(float_path))
        names = calibration_tensors(model)
        del model.graph.output[:]
        for i, name in enumerate(names):
            for op in ("ReduceMin", "ReduceMax"):
                out = f"edgepack_calib_{i}_{op}"
                model.graph.node.append(helper.make_node(op, [name], [out], keepdims=0))
                model.graph.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, []))
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        with _as_model_error(source or float_path):
            session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        batches = list(dataset.feeds())
        lo = np.full(len(names), np.inf, np.float32)
        hi = np.full(len(names), -np.inf, np.float32)
        for k, feed in enumerate(batches):
            r = session.run(None, feed)
            lo = np.minimum(lo, np.asarray(r[0::2], np.float32))
            hi = np.maximum(hi, np.asarray(r[1::2], np.float32))
            if progress:
                progress(k + 1, len(batches))
        if settings.symmetric_activations:
            m = np.maximum(np.abs(lo), np.abs(hi))
            lo, hi = -m, m
        return TensorsData(self.ort_method(), {n: (lo[i:i + 1].reshape(()), hi[i:i + 1].reshape(()))
                                               for i, n in enumerate(names)})


class PercentileCalibrator(OrtCalibrator):
    """Clips activation ranges at a percentile of |x| (robust to outliers)."""

    name = "percentile"

    def ort_method(self):
        from onnxruntime.quantization import CalibrationMethod

        return CalibrationMethod.Percentile

    def extra_options(self, settings):
        return {"CalibPercentile": settings.percentile}


class EntropyCalibrator(OrtCalibrator):
    """Chooses ranges minimising KL divergence between float and quantised histograms."""

    name = "entropy"

    def ort_method(self):
        from onnxruntime.quantization import CalibrationMethod

        return CalibrationMethod.Entropy

    def extra_options(self, settings):
        return {"CalibNumBins": 512, "CalibNumQuantizedBins": 128}


CALIBRATORS = {c.name: c for c in (MinMaxCalibrator(), PercentileCalibrator(), EntropyCalibrator())}


@dataclass(frozen=True)
class QuantSettings:
    per_channel: bool
    activation_type: str
    weight_type: str
    calibration_method: str
    percentile: float
    reduce_range: bool
    symmetric_activations: bool
    # nodes kept float on top of `float_nodes`' defaults (by name), e.g. by the accuracy search
    keep_float: tuple[str, ...] = ()
    # keep float the tensors a range-compressing op reads when their calibrated range spans
    # many orders of magnitude (`wide_reads`), weights staying int8
    float_wide_reads: bool = False

    def key(self) -> str:
        return "-".join(f"{v}" for v in asdict(self).values())


def resolve_settings(profile, overrides) -> QuantSettings:
    """The profile's quantisation settings with the config's overrides applied."""
    q = profile.quantization
    o = overrides
    reduce_range = o.reduce_range if o.reduce_range is not None else q.reduce_range
    if reduce_range == "auto":
        reduce_range = profile.resolved_reduce_range()
    method = o.calibration_method or q.calibration_method
    if method not in CALIBRATORS:
        raise ConfigError(
            f"quantization.calibration_method {method!r} is unknown; expected one of {', '.join(CALIBRATORS)}"
        )
    return QuantSettings(
        per_channel=q.per_channel if o.per_channel is None else o.per_channel,
        activation_type=o.activation_type or q.activation_type,
        weight_type=q.weight_type,
        calibration_method=method,
        percentile=o.percentile or q.percentile,
        reduce_range=bool(reduce_range),
        symmetric_activations=q.symmetric_activations,
    )


class _Reader:
    """ONNX Runtime CalibrationDataReader over a Dataset's model calls, reporting progress."""

    def __init__(self, dataset: Dataset, progress: Progress | None):
        self._batches = list(dataset.feeds())
        self._it = iter(self._batches)
        self._progress = progress
        self._done = 0

    def get_next(self):
        x = next(self._it, None)
        if x is None:
            return None
        self._done += 1
        if self._progress:
            self._progress(self._done, len(self._batches))
        return x

    def rewind(self):
        self._it = iter(self._batches)
        self._done = 0


def calibration_key(settings: QuantSettings) -> str:
    """Settings that change the measured ranges (not how they become scales)."""
    return f"{settings.calibration_method}-{settings.percentile}-{settings.symmetric_activations}"


def calibration_tensors(model: onnx.ModelProto) -> list[str]:
    """Float activation tensors to measure: every non-constant float node input/output."""
    inits = {i.name for i in model.graph.initializer}
    float_values = {v.name for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
                    if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    names: dict[str, None] = {}
    for n in model.graph.node:
        for t in list(n.input) + list(n.output):
            if t and t not in inits and t not in consts and t in float_values:
                names[t] = None
    return list(names)


def calibrate(float_path: Path, dataset: Dataset, settings: QuantSettings, progress: Progress | None = None,
              source: str | None = None):
    """Measure activation ranges on `dataset` with the settings' method.

    Returns ONNX Runtime's TensorsData (name -> range), used by both quantisers."""
    return CALIBRATORS[settings.calibration_method].collect(Path(float_path), dataset, settings, progress, source)


def ranges_by_name(tensors_data) -> dict[str, tuple[float, float]]:
    return {name: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1])))
            for name, td in tensors_data.data.items()}


# A Softmax input whose calibrated range spans more than this carries an additive attention
# mask (-1e4, -1e9 or the dtype's lowest for padded positions): one int8 scale over that
# span rounds every real attention score (|s| of order 10) to the same value, so attention
# becomes uniform. Measured on a 2-layer intent classifier (examples/intents): top-1 92.0 %
# with the masked Add and Softmax quantised, 99.0 % (= float) with both left float.
MASKED_SOFTMAX_SPAN = 1e3


def float_nodes(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> dict[str, str]:
    """Nodes the int8 graph keeps float by default, by node name, with the reason.

    Masked attention: a Softmax whose input spans more than MASKED_SOFTMAX_SPAN, and the
    Add/Sub/Where that applies the mask to the scores. A transformer (attention blocks
    recognised from the graph's structure, see transformer.py) also keeps its LayerNorms,
    residual Adds, embedding lookup, GELU, attention softmax and softmax·V MatMul float:
    int8 goes into its MatMul/Gemm inputs."""
    producers = {o: n for n in model.graph.node for o in n.output}
    keep: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type != "Softmax" or n.input[0] not in ranges:
            continue
        lo, hi = ranges[n.input[0]]
        if hi - lo <= MASKED_SOFTMAX_SPAN:
            continue
        why = (f"masked attention: Softmax input spans [{lo:.3g}, {hi:.3g}]; one int8 scale over an additive "
               "mask rounds every attention score to the same value")
        keep[n.name] = why
        p = producers.get(n.input[0])
        if p is not None and p.op_type in ("Add", "Sub", "Where"):
            keep[p.name] = why
    parts = transformer.find(model)
    if parts is not None:
        for name, why in parts.float_nodes().items():
            keep.setdefault(name, why)
    return keep


# A tensor read by a range-compressing op (Log, Sqrt, a fractional or negative Pow, Reciprocal,
# a variable divisor) whose calibrated magnitudes span more than this ratio (max |x| over min
# |x|, one-signed) is kept float by `float_wide_reads`: one linear scale over that span
# rounds every small value to zero (or one step), and the op then expands exactly those
# values. Measured on openWakeWord's log-mel front end (STFT Conv, power, mel MatMul, Clip
# floor, Log; quiet speech 45 dB below the loudest calibration sample): the Log reads
# [1.3, 2.7e9]; int8 0.4 dB SQNR, int16 activations -5 dB (every quiet value rounds to 0,
# the Clip floor is requantised to 0 too, Log gives -inf), 16-bit activations with the
# power/mel tensors float 50.7 dB.
WIDE_READ_SPAN = 1e3

# ops whose output holds the same values as their data input (so a float read stays float
# only if they are float too), floors, and ops whose input magnitude spans as many decades as
# their output's (x^p, |x|): a chain of them is followed up from the wide read
_SAME_VALUES = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")
_FLOORS = ("Clip", "Max", "Relu")
_MAGNITUDE = ("Pow", "Abs")


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    values[n.output[0]] = numpy_helper.to_array(a.t)
    return values


def compressing_reads(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Range-compressing ops by node name: (the activation tensor it reads, why), found from
    the graph alone: Log, Sqrt, Reciprocal, Pow with a constant exponent below 1 (fractional
    or negative), Div by a non-constant divisor."""
    consts = _constants(model)
    found: dict[str, tuple[str, str]] = {}
    for n in model.graph.node:
        if n.op_type in ("Log", "Sqrt", "Reciprocal") and n.input[0] not in consts:
            found[n.name] = (n.input[0], n.op_type)
        elif n.op_type == "Pow" and n.input[0] not in consts and n.input[1] in consts:
            p = np.asarray(consts[n.input[1]], np.float64).ravel()
            if p.size and np.all(p < 1) and np.all(p != 0):
                found[n.name] = (n.input[0], f"Pow x^{p[0]:g}")
        elif n.op_type == "Div" and len(n.input) > 1 and n.input[1] not in consts:
            found[n.name] = (n.input[1], "Div by a variable")
    return found


def magnitude_span(rng: tuple[float, float] | None) -> float | None:
    """max |x| / min |x| of a one-signed calibrated range (inf when it reaches 0); None when
    the range crosses zero or is unknown (min/max cannot tell how small |x| gets)."""
    if rng is None:
        return None
    lo, hi = rng
    if lo < 0 < hi:
        return None
    small, big = sorted((abs(lo), abs(hi)))
    if big == 0:
        return None
    return float("inf") if small == 0 else big / small


def wide_reads(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]
               ) -> tuple[dict[str, str], dict[str, str]]:
    """(tensors to keep float, nodes to keep float), each by name with the reason.

    For every `compressing_reads` op whose input spans more than WIDE_READ_SPAN (calibrated
    magnitudes): that tensor, and, following it up, the tensors feeding it through ops that
    keep its values (reshapes, floors such as Clip/Max/Relu, x^p, |x|) and the inputs of
    other producers that are wide themselves. Weight-bearing producers (Conv, MatMul, Gemm:
    any node with an initializer input other than a scalar) keep their int8 weights: only
    their activation output (and a wide activation input) stays float. Other nodes on the
    chain (no weights) are kept float whole, which also stops ONNX Runtime's quantiser from
    folding a floor Clip/Relu into the preceding node's range."""
    consts = _constants(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    tensors: dict[str, str] = {}
    nodes: dict[str, str] = {}

    def weighted(n) -> bool:
        return any(i in consts and np.asarray(consts[i]).size > 1 for i in n.input)

    def data_input(n) -> str | None:
        ins = [i for i in n.input if i and i not in consts]
        return ins[0] if len(ins) == 1 else None

    def follow(t: str, why: str) -> None:
        if t in tensors or t in consts:
            return
        tensors[t] = why
        p = producers.get(t)
        if p is None or p.op_type == "Constant":
            return
        if weighted(p):
            ins = [i for i in p.input if i and i not in consts]
        else:
            if p.name:
                nodes.setdefault(p.name, why)
            d = data_input(p)
            if p.op_type in _SAME_VALUES + _FLOORS + _MAGNITUDE and d is not None:
                follow(d, why)
                return
            ins = [i for i in p.input if i and i not in consts]
        for i in ins:
            span = magnitude_span(ranges.get(i))
            if span is not None and span > WIDE_READ_SPAN:
                follow(i, why)

    for name, (t, op) in compressing_reads(model).items():
        span = magnitude_span(ranges.get(t))
        if span is None or span <= WIDE_READ_SPAN:
            continue
        lo, hi = ranges[t]
        why = (f"read by {op} ({name}) spanning [{lo:.3g}, {hi:.3g}]: one linear scale rounds its small values "
               f"to zero, which {op} then expands")
        if name:
            nodes.setdefault(name, why)
        follow(t, why)
    return tensors, nodes


def keep_tensors_float(model: onnx.ModelProto, tensors, float_model: onnx.ModelProto | None = None) -> list[str]:
    """Remove the QuantizeLinear/DequantizeLinear pair ONNX Runtime's quantiser put on each
    named tensor, in place: every reader takes the float tensor. Returns the tensors changed.

    With `float_model`, a tensor whose producer is not the float graph's (the quantiser folded
    a Relu/Clip into the preceding node's output range and renamed its output) is left as it
    is: without its Q/DQ pair the floor would be lost."""
    g = model.graph
    tensors = set(tensors)
    if float_model is not None:
        before = {o: n.op_type for n in float_model.graph.node for o in n.output}
        after = {o: n.op_type for n in g.node for o in n.output}
        after.update({d.output[0]: after.get(q.input[0]) for q in g.node if q.op_type == "QuantizeLinear"
                      for d in g.node if d.op_type == "DequantizeLinear" and d.input[0] == q.output[0]})
        tensors = {t for t in tensors if after.get(t) is None or after.get(t) == before.get(t)}
    outputs = {o.name for o in g.output}
    readers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    producers = {o: n for n in g.node for o in n.output}
    drop, done = [], []
    for q in [n for n in g.node if n.op_type == "QuantizeLinear"]:
        dqs = [d for d in readers.get(q.output[0], []) if d.op_type == "DequantizeLinear"]
        if len(dqs) != len(readers.get(q.output[0], [])):
            continue  # a quantised tensor read as integers (not from ONNX Runtime's QDQ output): leave it
        src = q.input[0]
        # a graph output: the quantiser renamed the producer's output and ends the pair on the name
        named = [d.output[0] for d in dqs if d.output[0] in tensors and d.output[0] in outputs]
        if src not in tensors and not named:
            continue
        if named:
            p = producers.get(src)
            if p is None:
                continue
            p.output[list(p.output).index(src)] = named[0]
            for r in readers.get(src, []):
                if r is not q:
                    r.input[:] = [named[0] if i == src else i for i in r.input]
            src = named[0]
        for d in dqs:
            for r in readers.get(d.output[0], []):
                r.input[:] = [src if i == d.output[0] else i for i in r.input]
            drop.append(d)
        drop.append(q)
        done.append(src)
    for n in drop:
        g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    return sorted(set(done))


def quantizer_options(model: onnx.ModelProto) -> dict:
    """Extra options for ONNX Runtime's quantiser that go with `float_nodes`' defaults
    (for a transformer: float Gemm outputs and float residual reads, transformer.ORT_OPTIONS)."""
    return dict(transformer.ORT_OPTIONS) if transformer.find(model) is not None else {}


def quantize_static(float_path: Path, dataset: Dataset | None, settings: QuantSettings, out_path: Path,
                    progress: Progress | None = None, ranges=None, source: str | None = None) -> Path:
    """Write a QDQ int8 model; returns its path.

    `ranges` (from `calibrate`) are used as they are; without them the float graph is
    calibrated on `dataset` first."""
    from onnxruntime.quantization import QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    if ranges is None:
        ranges = calibrate(float_path, dataset, settings, progress, source)
    float_model = onnx.load(str(float_path))
    keep = float_nodes(float_model, ranges_by_name(ranges))
    keep.update({n: "kept float by the accuracy search" for n in settings.keep_float if n not in keep})
    float_tensors: dict[str, str] = {}
    if settings.float_wide_reads:
        float_tensors, wide_nodes = wide_reads(float_model, ranges_by_name(ranges))
        for n, why in wide_nodes.items():
            keep.setdefault(n, why)
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8, "int16": QuantType.QInt16}
    calibrator = CALIBRATORS[settings.calibration_method]
    extra = {
        "ActivationSymmetric": settings.symmetric_activations,
        "WeightSymmetric": True,
        **quantizer_options(float_model),
        **calibrator.extra_options(settings),
    }
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), _quiet(), \
            _as_model_error(source or float_path):
        cache = Path(tmp, "ranges.json")
        save_tensors_data(ranges, cache)  # quantize_static reads ranges from its calibration cache
        ort_quantize_static(
            str(float_path),
            str(out_path),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=qtype[settings.activation_type],
            weight_type=qtype[settings.weight_type],
            calibrate_method=calibrator.ort_method(),
            extra_options=extra,
            calibration_cache_path=str(cache),
            nodes_to_exclude=sorted(keep),
        )
    if float_tensors:
        model = onnx.load(str(out_path))
        keep_tensors_float(model, float_tensors, float_model)
        onnx.save(model, str(out_path))
    return Path(out_path)


@contextlib.contextmanager
def _as_model_error(path):
    from ..errors import EdgepackError, ModelError, one_line

    try:
        yield
    except EdgepackError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: ONNX Runtime's static quantiser failed: "
                         f"{type(exc).__name__}: {one_line(exc)}") from None


@contextlib.contextmanager
def _quiet():
    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def io_quant_params(model: onnx.ModelProto) -> dict:
    """Scale / zero point of the Q at each graph input and the DQ at each graph output.

    For a QDQ model with float I/O these say how the model quantises its input and
    dequantises its output; they are what a device needs to feed int8 data directly.
    """
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    values = {**inits, **consts}

    def params(node):
        scale = values.get(node.input[1])
        zp = values.get(node.input[2]) if len(node.input) > 2 else None
        return {
            "scale": np.asarray(scale).astype(float).ravel().tolist() if scale is not None else None,
            "zero_point": np.asarray(zp).astype(int).ravel().tolist() if zp is not None else None,
            "dtype": np.asarray(zp).dtype.name if zp is not None else None,
        }

    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    result = {"inputs": {}, "outputs": {}}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in inputs:
            result["inputs"][n.input[0]] = params(n)
        if n.op_type == "DequantizeLinear" and n.output[0] in outputs:
            result["outputs"][n.output[0]] = params(n)
    return result


def quantized_fraction(model: onnx.ModelProto) -> dict:
    """How much of the compute sits between Q/DQ pairs: compute ops that read a dequantised
    input and whose output is quantised again. A node kept float reads dequantised inputs
    too, but its output stays float, so it is not counted."""
    producers = {o: n for n in model.graph.node for o in n.output}
    requantised = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    compute = [n for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Constant")]
    quantized = [n for n in compute
                 if any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)
                 and set(n.output) & requantised]
    float_only = sorted({n.op_type for n in compute} - {n.op_type for n in quantized})
    return {"compute_nodes": len(compute), "quantized_nodes": len(quantized), "float_op_types": float_only}


class Int8Graphs:
    """The build's int8 QDQ graphs: calibrated and quantised once per distinct setting, and
    shared by every target that asks for the same settings."""

    def __init__(self, float_path: Path, calibration: Dataset, work_dir: Path, source: str, reporter):
        self.float_path, self.calibration, self.work_dir = Path(float_path), calibration, Path(work_dir)
        self.source, self.reporter = source, reporter
        self._ranges: dict[str, object] = {}
        self._graphs: dict[str, tuple[Path, dict]] = {}

    def get(self, settings: QuantSettings) -> tuple[Path, dict]:
        """(QDQ ONNX path, per-tensor (min, max) ranges by name) for `settings`."""
        ckey = calibration_key(settings)
        if ckey not in self._ranges:
            with self.reporter.stage(f"calibrating ({settings.calibration_method}, "
                                     f"{len(self.calibration)} samples)") as tick:
                self._ranges[ckey] = calibrate(self.float_path, self.calibration, settings, progress=tick,
                                               source=self.source)
        if settings.key() not in self._graphs:
            with self.reporter.stage(f"quantising to int8 QDQ (per_channel={settings.per_channel}, "
                                     f"reduce_range={settings.reduce_range})"):
                qpath = self.work_dir / f"model.int8.{len(self._graphs)}.onnx"
                quantize_static(self.float_path, self.calibration, settings, qpath, ranges=self._ranges[ckey],
                                source=self.source)
            self._graphs[settings.key()] = (qpath, ranges_by_name(self._ranges[ckey]))
        return self._graphs[settings.key()]


def quantized_ops(path: Path) -> dict:
    """`quantized_fraction` of the ONNX file at `path`."""
    return quantized_fraction(onnx.load(str(path)))
