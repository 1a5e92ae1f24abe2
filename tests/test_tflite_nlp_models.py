"""Transformers and multi-input models end to end: a small sentence-embedding encoder
built with torch (int64 input_ids + attention_mask, embedding lookup, additive mask,
LayerNorm, GELU in both forms, mean pooling), exported with torch.onnx (dynamo, opset 18)
and cleaned by edgepack, through every TFLite variant; full-int8 quantisation of masked
attention and sums; integer I/O; the artifact writer's calibration feeds; refusals.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nlp_harness import TypedGraph, cosine, op_names  # noqa: E402
from onnx_graphs import run_onnx, run_tflite  # noqa: E402

from edgepack.errors import DataError, UnsupportedOperatorError  # noqa: E402
from edgepack.tflite import quantize as tq  # noqa: E402
from edgepack.tflite.convert import convert  # noqa: E402

I64 = np.int64
VOCAB, SEQ, DIM = 100, 16, 32


def _encoder():
    """The families' encoder (tests/families.py), one exact-GELU and one tanh-GELU layer."""
    from families import _encoder_module

    return _encoder_module(("none", "tanh"))


def _feeds(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        mask = np.ones((1, SEQ), I64)
        mask[0, rng.integers(4, SEQ + 1):] = 0  # some samples padded, some not
        out.append({"input_ids": rng.integers(0, VOCAB, (1, SEQ)).astype(I64), "attention_mask": mask})
    return out


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    import torch

    from edgepack.stages.graph import clean_float_graph

    d = tmp_path_factory.mktemp("encoder")
    example = tuple(torch.from_numpy(v) for v in _feeds(1, 0)[0].values())
    # The output must not be called "embedding": torch.onnx gives that name to the
    # Embedding's own output as well, and the graph then fails shape inference.
    torch.onnx.export(_encoder(), example, str(d / "raw.onnx"), dynamo=True, opset_version=18,
                      input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"])
    model = clean_float_graph(onnx.load(str(d / "raw.onnx")), "raw.onnx")
    onnx.save(model, str(d / "float.onnx"))
    data, io = convert(model)
    return model, data, io, d / "float.onnx"


def _cosines(model, data, io, feeds) -> list[float]:
    out = []
    for f in feeds:
        ref = run_onnx(model, f)["sentence_embedding"]
        out.append(cosine(ref, run_tflite(data, io, f)["sentence_embedding"]))
    return out


def test_encoder_float_variants(encoder):
    """float32 matches onnxruntime; float16 and dynamic-range int8 stay close."""
    model, data, io, _ = encoder
    assert [(t["name"], t["dtype"], t["perm"]) for t in io["inputs"]] == [
        ("input_ids", "int64", [0, 1]), ("attention_mask", "int64", [0, 1])]
    ops = op_names(data)
    assert ops.count("GELU") == 2 and "TANH" not in ops and "POW" not in ops and "SQRT" not in ops, ops
    feeds = _feeds(12, seed=1)
    for kind, blob, floor in (("float32", data, 0.9999), ("float16", tq.to_float16(data), 0.99),
                              ("dynamic-int8", tq.to_dynamic_range_int8(data), 0.99)):
        cos = _cosines(model, blob, io, feeds)
        print(f"encoder {kind}: cosine to onnxruntime min {min(cos):.6f} mean {np.mean(cos):.6f}")
        assert min(cos) >= floor, (kind, cos)


def test_encoder_full_int8(encoder):
    """LiteRT's quantiser runs every op in int8 except the int→float CAST of the mask and
    the mean pooling's DIV (measured with ai-edge-litert 2.3.0: cosine ≈ 0.998 minimum
    over these feeds); token ids and mask stay int64."""
    model, data, io, _ = encoder
    blob, float_ops = tq.quantize_full_int8(data, _feeds(32, seed=2), io_type="int8")
    cos = _cosines(model, blob, io, _feeds(12, seed=1))
    print(f"encoder full int8: cosine to onnxruntime min {min(cos):.6f} mean {np.mean(cos):.6f}; "
          f"float ops {float_ops}")
    assert min(cos) >= 0.9, cos
    assert float_ops == ["CAST", "DIV"]
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob)
    assert [d["dtype"] for d in it.get_input_details()] == [np.int64, np.int64]
    assert it.get_output_details()[0]["dtype"] == np.int8
    ops = op_names(blob)
    assert ops.count("SOFTMAX") == 2 and ops.count("BATCH_MATMUL") == 4


def _masked_attention(style: str):
    """Scores masked as exporters write it: (1 - mask) · -1e4 or · float32 min (HF), a
    Where(mask, 0, -inf) bias (torch SDPA), or Where(mask, scores, -1e9)."""
    def build(g: TypedGraph) -> str:
        scores, v = g.input("scores", [2, 8, 8], np.float32, -3, 3), g.input("v", [2, 8, 4])
        mask = g.input("mask", [2, 8], I64, 0, 2)
        keep = g.op("Unsqueeze", g.op("Cast", mask, to=9), g.ints([1]))
        if style == "where_scores":
            return g.op("MatMul", g.op("Softmax", g.op("Where", keep, scores, g.const(np.float32(-1e9))), axis=-1), v)
        if style == "where_inf":
            bias = g.op("Where", keep, g.const(np.float32(0)), g.const(np.float32(-np.inf)))
        else:
            big = np.float32(-1e4) if style == "1e4" else np.finfo(np.float32).min
            bias = g.op("Mul", g.op("Sub", g.const(np.float32(1)), g.op("Cast", mask, to=1)), g.const(big))
            bias = g.op("Unsqueeze", bias, g.ints([1]))
        return g.op("MatMul", g.op("Softmax", g.op("Add", scores, bias), axis=-1), v)

    build.__name__ = f"mask_{style}"
    return build


def _sum_pool(g: TypedGraph) -> str:
    return g.op("ReduceSum", g.input("x", [1, 64, 8], np.float32, -1, 1), g.ints([1]), keepdims=0)


INT8_CASES = [_masked_attention(s) for s in ("1e4", "finfo_min", "where_inf", "where_scores")] + [_sum_pool]


@pytest.mark.parametrize("build", INT8_CASES, ids=[b.__name__ for b in INT8_CASES])
def test_full_int8_masked_softmax_and_sum(build):
    """A mask bias in the softmax input's range leaves the real scores a few int8 steps
    (-1e4: cosine 0.60; float32 min: 0.39; -inf made LiteRT abort the process); LiteRT's
    quantiser gives SUM's output its input's scale, so sums saturate (0.83). With
    calibration.tame_softmax_inputs and fallback.sum_as_mean: ≥ 0.997 (measured)."""
    g = TypedGraph()
    model = g.model(build(g))
    data, io = convert(model)
    calib = [{t["name"]: np.transpose(f[t["name"]], t["perm"]) for t in io["inputs"]}
             for f in (g.feeds(100 + i) for i in range(16))]
    blob, _ = tq.quantize_full_int8(data, calib, io_type="float32")
    cos = [cosine(run_onnx(model, f)[model.graph.output[0].name], run_tflite(blob, io, f)[model.graph.output[0].name])
           for f in (g.feeds(s) for s in range(5))]
    print(f"{build.__name__}: int8 cosine min {min(cos):.5f}")
    assert min(cos) >= 0.99, cos


@pytest.mark.parametrize("io_type", ["int8", "uint8"])
def test_integer_io_kept_when_edge_ops_stay_float(io_type):
    """DIV (no int8 kernel in LiteRT's quantiser) reads the inputs and writes the output:
    the model still has the requested integer I/O, via DEQUANTIZE/QUANTIZE at the edges."""
    from ai_edge_litert.interpreter import Interpreter

    g = TypedGraph()
    model = g.model(g.op("Div", g.input("a", [2, 8], np.float32, 0.5, 2), g.input("b", [2, 8], np.float32, 0.5, 2)))
    data, io = convert(model)
    blob, float_ops = tq.quantize_full_int8(data, [g.feeds(s) for s in range(8)], io_type=io_type)
    assert float_ops == ["DIV"] and op_names(blob) == ["DEQUANTIZE", "DEQUANTIZE", "DIV", "QUANTIZE"]
    it = Interpreter(model_content=blob)
    assert {np.dtype(d["dtype"]).name for d in it.get_input_details() + it.get_output_details()} == {io_type}
    f, name = g.feeds(20), model.graph.output[0].name
    assert cosine(run_onnx(model, f)[name], run_tflite(blob, io, f)[name]) > 0.999


def test_float16_keeps_mask_constants_beyond_its_range():
    """float32's minimum as a mask bias would be -inf in float16, and 0 · -inf is NaN."""
    g = TypedGraph()
    model = g.model(_masked_attention("finfo_min")(g))
    data, io = convert(model)
    f = g.feeds(3)
    out = run_tflite(tq.to_float16(data), io, f)
    name = model.graph.output[0].name
    assert np.isfinite(out[name]).all() and cosine(run_onnx(model, f)[name], out[name]) > 0.9999


def test_samples_per_input():
    """Several inputs need a dict per call; single-input models take arrays or dicts."""
    g = TypedGraph()
    model = g.model(g.op("Add", g.input("a", [2, 3]), g.input("b", [2, 3])))
    data, _ = convert(model)
    feeds = [g.feeds(s) for s in range(4)]
    assert tq.to_full_int8(data, feeds, io_type="float32")
    with pytest.raises(DataError, match="dict of input name"):
        tq.to_full_int8(data, [f["a"] for f in feeds])
    with pytest.raises(DataError, match="no array for input"):
        tq.to_full_int8(data, [{"a": f["a"]} for f in feeds])
    g = TypedGraph()
    data, _ = convert(g.model(g.op("Relu", g.input("x", [2, 3]))))
    assert tq.to_full_int8(data, [g.feeds(1)]) and tq.to_full_int8(data, [g.feeds(1)["x"]])


def test_writer_feeds_several_inputs_and_records_float_ops(encoder, tmp_path):
    from edgepack.stages.emit.base import GraphSet
    from edgepack.stages.emit.tflite import emit

    model, _, io, path = encoder

    class Feeds:  # the lead's interface: one ONNX-layout dict per model call
        def feeds(self):
            yield from _feeds(8, seed=3)

        def __len__(self):
            return 8

    profile = SimpleNamespace(tflite=SimpleNamespace(layout="NHWC", io_type="int8"),
                              artifacts=["tflite-float32", "tflite-int8"])
    arts = {a.kind: a for a in emit(GraphSet(float_onnx=path, calibration=Feeds()), profile, tmp_path)}
    q = arts["tflite-int8"].quantization
    assert q["float_ops"] == ["CAST", "DIV"] and q["calibration_samples"] == 8
    assert arts["tflite-float32"].quantization == {}
    cos = _cosines(model, arts["tflite-int8"].path.read_bytes(), io, _feeds(4, seed=1))
    assert min(cos) >= 0.9


def test_writer_calibration_feeds_single_input_batched():
    """A single-input dataset of stacked samples feeds model-shaped batches, in TFLite layout."""
    from edgepack.stages.data import Dataset
    from edgepack.stages.emit.tflite import calibration_feeds

    g = TypedGraph()
    _, io = convert(g.model(g.op("Relu", g.conv(g.input("x", [2, 3, 4, 5]), 3, 2, 1))))
    x = np.random.default_rng(0).normal(size=(5, 3, 4, 5)).astype(np.float32)
    feeds = list(calibration_feeds(Dataset.of(x, name="x", batch=2), io))
    assert len(feeds) == 2 and list(feeds[0]) == ["x"]
    np.testing.assert_array_equal(feeds[1]["x"], x[2:4].transpose(0, 2, 3, 1))


def test_io_types_and_layouts():
    """Each input keeps its type; only rank-4 float inputs take NHWC; int64 outputs stay int64."""
    g = TypedGraph()
    image = g.op("Relu", g.conv(g.input("x", [1, 4, 8, 8]), 4, 6, 3))
    rows = g.op("Gather", g.random((10, 3)), g.input("ids", [1, 4], I64, 0, 10))
    model = g.model(image, rows, g.op("Identity", g.input("flags", [1, 2, 3, 4], I64, 0, 9)))
    _, io = convert(model)
    ins = {t["name"]: t for t in io["inputs"]}
    assert (ins["x"]["dtype"], ins["x"]["layout"], ins["x"]["perm"]) == ("float32", "NHWC", [0, 2, 3, 1])
    assert (ins["ids"]["dtype"], ins["ids"]["perm"]) == ("int64", [0, 1])
    assert (ins["flags"]["dtype"], ins["flags"]["layout"], ins["flags"]["perm"]) == ("int64", "NCHW", [0, 1, 2, 3])
    assert [o["dtype"] for o in io["outputs"]] == ["float32", "float32", "int64"]


def seq(g: TypedGraph) -> str:
    return g.input("x", [2, 5, 8])


REFUSED = {
    "NonZero": lambda g: g.op("NonZero", seq(g), name="the_op"),
    "range_of_input": lambda g: g.op("Range", g.input("n", [], I64, 1, 5), g.ints(9), g.ints(1), name="the_op"),
    "constant_of_shape_variable": lambda g: g.op("ConstantOfShape", g.input("s", [2], I64, 1, 4), name="the_op"),
    "gather_const_index_out_of_range": lambda g: g.op("Gather", seq(g), g.ints([5]), axis=1, name="the_op"),
    "layernorm_mean_output_read": lambda g: g.op("LayerNormalization", seq(g), g.random((8,)), outputs=2,
                                                 name="the_op")[1],
    "pow_int_fractional": lambda g: g.op("Pow", g.input("x", [3], I64, 0, 9), g.const(np.float32(0.5)), name="the_op"),
    "matmul_int": lambda g: g.op("MatMul", g.input("a", [2, 3], I64, 0, 9), g.input("b", [3, 2], I64, 0, 9),
                                 name="the_op"),
    "cast_to_double": lambda g: g.op("Cast", seq(g), to=11, name="the_op"),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_refused_with_node_and_reason(kind):
    g = TypedGraph()
    model = g.model(REFUSED[kind](g), opset=18)
    with pytest.raises(UnsupportedOperatorError) as e:
        convert(model)
    assert "'the_op'" in str(e.value), str(e.value)
