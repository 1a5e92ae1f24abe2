"""TFLite artifacts: float32, float16, dynamic-range int8 and full-integer int8.

The float32 model comes from edgepack's own ONNX → TFLite converter; the int8 model is
LiteRT's own quantiser calibrated on the same samples as the ONNX int8 artifact, so both
formats of one release see the same calibration data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from .base import Artifact, GraphSet

VARIANTS = {
    "tflite-float32": ("float32", "model.float32.tflite"),
    "tflite-float16": ("float16", "model.float16.tflite"),
    "tflite-dynamic-int8": ("dynamic-int8", "model.dynamic-int8.tflite"),
    "tflite-int8": ("int8", "model.int8.tflite"),
    "tflite-int16x8": ("int16x8", "model.int16x8.tflite"),
}


def emit(graphs: GraphSet, profile, out_dir: Path) -> list[Artifact]:
    from ...tflite import quantize as tq
    from ...tflite.convert import convert

    settings = profile.tflite
    key = ("tflite-float32", str(graphs.float_onnx), settings.layout)
    if key not in graphs.cache:
        graphs.cache[key] = convert(onnx.load(str(graphs.float_onnx)), io_layout=settings.layout)
    float_bytes, io = graphs.cache[key]
    layout = {"inputs": [{"name": t["name"], "layout": t["layout"], "perm": t["perm"]} for t in io["inputs"]],
              "outputs": [{"name": t["name"], "layout": t["layout"], "perm": t["perm"]} for t in io["outputs"]]}
    artifacts = []
    for kind in profile.artifacts:
        if kind not in VARIANTS:
            continue
        precision, filename = VARIANTS[kind]
        quant = {}
        vkey = (kind, key, settings.io_type, id(graphs.ranges))
        if vkey not in graphs.cache:
            float_ops: list[str] = []
            if kind == "tflite-float32":
                data = float_bytes
            elif kind == "tflite-float16":
                data = tq.to_float16(float_bytes)
            elif kind == "tflite-dynamic-int8":
                data = tq.to_dynamic_range_int8(float_bytes)
            else:  # 16x8 takes float I/O (or int16, which no device pipeline feeds)
                sixteen = kind == "tflite-int16x8"
                data, float_ops = tq.quantize_full_int8(float_bytes, calibration_feeds(graphs.calibration, io),
                                                        io_type="float32" if sixteen else settings.io_type,
                                                        progress=graphs.progress, ranges=graphs.ranges,
                                                        activations="int16" if sixteen else "int8")
            graphs.cache[vkey] = data, float_ops
        data, float_ops = graphs.cache[vkey]
        path = Path(out_dir) / filename
        path.write_bytes(data)
        if precision == "int8":
            quant = {"scheme": "full-integer (LiteRT post-training quantiser; ranges from edgepack's calibration "
                               "of the float ONNX graph, shared with the ONNX int8 artifact)",
                     "activation_type": "int8",
                     "weight_type": "int8", "per_channel": True, "io_type": settings.io_type,
                     "calibration_samples": len(graphs.calibration),
                     # ops LiteRT's quantiser cannot run in int8, left float (QUANTIZE/DEQUANTIZE around)
                     "float_ops": float_ops}
        elif precision == "int16x8":
            quant = {"scheme": "16x8 (LiteRT post-training quantiser: int16 activations, int8 weights, int64 "
                               "biases; same ranges as the int8 artifact)",
                     "activation_type": "int16", "weight_type": "int8", "bias_type": "int64", "per_channel": True,
                     "io_type": "float32", "calibration_samples": len(graphs.calibration), "float_ops": float_ops}
        elif precision == "dynamic-int8":
            quant = {"scheme": "dynamic-range: int8 weights (per output channel), float activations quantised "
                               "at run time",
                     "weight_type": "int8", "activation_type": "float32", "per_channel": True}
        elif precision == "float16":
            quant = {"scheme": "float16 weights, float32 compute", "weight_type": "float16"}
        artifacts.append(Artifact(kind=kind, path=path, runtime="litert", precision=precision, layout=layout,
                                  quantization=quant))
    return artifacts


def calibration_feeds(dataset, io: dict):
    """Per model call, a dict input name -> array in the TFLite model's input layout.

    `dataset.feeds()` yields ONNX-layout dicts by input name, one per model call."""
    perms = {t["name"]: t["perm"] for t in io["inputs"]}
    if dataset is None:
        return
    for feed in dataset.feeds():
        yield {name: np.transpose(np.asarray(arr), perms[name]) for name, arr in feed.items()}
