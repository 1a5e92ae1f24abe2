"""Transformer-aware int8 defaults: the structure recognised in the graph (attention,
LayerNorm, residual Adds, embedding lookup, GELU), what the ONNX QDQ int8 graph keeps
float because of it, what that buys in accuracy, and the TFLite masked-softmax ranges of
every layer when one mask bias is shared by all of them.

The model is tests/families.py's sentence-embedding encoder with three layers (one mask
bias shared by the three), exported by torch.onnx and cleaned by edgepack.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import ort_session  # noqa: E402
from nlp_harness import cosine  # noqa: E402
from onnx_graphs import run_onnx, run_tflite  # noqa: E402

from edgepack.stages import transformer  # noqa: E402
from edgepack.stages.data import Dataset  # noqa: E402

LAYERS = 3


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    import torch
    from families import _encoder_module, encoder_data

    from edgepack.stages.graph import clean_float_graph

    d = tmp_path_factory.mktemp("tencoder")
    module = _encoder_module(("none",) * LAYERS)
    feeds = encoder_data(1, 0)
    example = tuple(torch.from_numpy(feeds[k][:1]) for k in ("input_ids", "attention_mask"))
    torch.onnx.export(module, example, str(d / "raw.onnx"), dynamo=True, opset_version=18,
                      input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"])
    model = clean_float_graph(onnx.load(str(d / "raw.onnx")), "raw.onnx")
    onnx.save(model, str(d / "float.onnx"))
    return model, d / "float.onnx"


def _calls(n: int, seed: int) -> dict[str, np.ndarray]:
    from families import encoder_data

    return {k: v[:, None] for k, v in encoder_data(n, seed).items()}  # [n, 1, seq]: one call each


def _ops(model, names) -> list[str]:
    by_name = {n.name: n.op_type for n in model.graph.node}
    return sorted(by_name[n] for n in names)


def test_structure_recognised(encoder):
    model, _ = encoder
    t = transformer.find(model)
    assert t is not None and len(t.attention) == LAYERS
    by_name = {n.name: n for n in model.graph.node}
    for a in t.attention:
        assert by_name[a.qk].op_type == by_name[a.sv].op_type == "MatMul"
        assert by_name[a.softmax].op_type == "Softmax" and by_name[a.mask].op_type == "Add"
        assert [by_name[s].op_type for s in a.scale] in (["Div"], ["Mul"])
    # one shared mask bias: three different mask Adds reading the same tensor
    assert len({by_name[a.mask].name for a in t.attention}) == LAYERS
    assert len(t.layer_norms) == 2 * LAYERS
    assert len(t.residual_adds) == 2 * LAYERS
    assert all(by_name[r].op_type == "Add" for r in t.residual_adds)
    assert [by_name[e].op_type for e in t.embeddings][0] == "Gather"
    assert len(t.gelus) == LAYERS


def test_decomposed_layernorm_recognised():
    """LayerNorm written out (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add), as older
    exporters do, is one LayerNorm of nine nodes."""
    d = 8
    inits = [numpy_helper.from_array(np.float32(2.0), "two"), numpy_helper.from_array(np.float32(1e-5), "eps"),
             numpy_helper.from_array(np.ones(d, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(d, np.float32), "beta")]
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], name="m1", axes=[-1]),
             helper.make_node("Sub", ["x", "mean"], ["dx"], name="sub"),
             helper.make_node("Pow", ["dx", "two"], ["sq"], name="pow"),
             helper.make_node("ReduceMean", ["sq"], ["var"], name="m2", axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
             helper.make_node("Sqrt", ["ve"], ["std"], name="sqrt"),
             helper.make_node("Div", ["dx", "std"], ["xn"], name="div"),
             helper.make_node("Mul", ["xn", "gamma"], ["xg"], name="mul"),
             helper.make_node("Add", ["xg", "beta"], ["y"], name="add_beta")]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, d])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, d])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert [[n.name for n in ln] for ln in transformer._layer_norms(transformer._Graph(model))] == [
        [n.name for n in nodes]]
    assert transformer.find(model) is None  # no attention: not a transformer, nothing changes


def test_float_nodes_and_int8_accuracy(encoder, tmp_path, monkeypatch):
    """The preset keeps softmax, mask, softmax·V, LayerNorm, residual, embedding sum and
    GELU float and quantises the Q·Kᵀ and weight MatMuls and the embedding table; on this (untrained) encoder the int8
    embedding's cosine to float rises from 0.99970 (only the masked softmax float) to
    0.99993 (measured, rpi4 settings, onnxruntime's reference QDQ execution)."""
    from edgepack.config import QuantOverrides
    from edgepack.stages import quantize as q
    from edgepack.targets import resolve_target

    model, path = encoder
    calib = Dataset(_calls(32, 2), None, "memory")
    settings = q.resolve_settings(resolve_target("rpi4"), QuantOverrides())
    ranges = q.calibrate(path, calib, settings)
    keep = q.float_nodes(model, q.ranges_by_name(ranges))
    t = transformer.find(model)
    for a in t.attention:
        assert a.softmax in keep and a.mask in keep and a.sv in keep and a.qk not in keep
        assert "masked attention" in keep[a.softmax] and "softmax·V" in keep[a.sv]
    sums = [n for n in t.embeddings if n not in t.lookups]
    for names, word in ((sum(t.layer_norms, []), "LayerNorm"), (t.residual_adds, "residual"),
                        (sums, "embedding"), (sum(t.gelus, []), "GELU")):
        assert names and all(word in keep[n] for n in names), word
    assert t.lookups and not set(t.lookups) & set(keep)  # the embedding table is stored int8
    weight_matmuls = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                      and n.name not in {a.sv for a in t.attention}]
    assert weight_matmuls and not set(weight_matmuls) & set(keep)
    assert q.quantizer_options(model) == transformer.ORT_OPTIONS

    evals = _calls(16, 7)
    feeds = [{k: v[i] for k, v in evals.items()} for i in range(16)]

    def mean_cosine(qpath):
        f, i8 = ort_session(path, reference=True), ort_session(qpath, reference=True)
        return float(np.mean([cosine(f.run(None, x)[0], i8.run(None, x)[0]) for x in feeds]))

    preset = mean_cosine(q.quantize_static(path, calib, settings, tmp_path / "preset.onnx", ranges=ranges))
    qdq = onnx.load(str(tmp_path / "preset.onnx"))
    producer = {o: n.op_type for n in qdq.graph.node for o in n.output}
    float_readers = set(sum(t.layer_norms, [])) | set(t.residual_adds) | {a.softmax for a in t.attention}
    for n in qdq.graph.node:
        if n.name in float_readers:  # they read float tensors, not dequantised int8 copies
            assert all(producer.get(i) != "DequantizeLinear" for i in n.input), n.name
    monkeypatch.setattr(transformer, "find", lambda model: None)
    before = mean_cosine(q.quantize_static(path, calib, settings, tmp_path / "before.onnx", ranges=ranges))
    print(f"int8 cosine to float: masked-softmax only {before:.5f}, transformer preset {preset:.5f}")
    assert preset >= 0.9998 and (1 - preset) < (1 - before) / 2


def test_tame_softmax_covers_every_layer(encoder):
    """One mask bias shared by three layers: each layer's SOFTMAX input range is cut to
    the scores' own span (before the fix only the first layer's was: the shared bias, once
    cut, no longer looked like a mask), and the full-int8 model stays close to float."""
    from edgepack.tflite import calibration as cal
    from edgepack.tflite import quantize as tq
    from edgepack.tflite.convert import convert

    model, _ = encoder
    data, io = convert(model)
    calls = _calls(16, 3)
    samples = [{k: v[i] for k, v in calls.items()} for i in range(16)]
    tfl = tq._load(data)
    cal.set_ranges(tfl, cal.measure_ranges(data, cal.assign_ranges(tfl, {}), samples))
    g = tfl.subgraphs[0]
    softmax_in = [int(op.inputs[0]) for op in g.operators
                  if tfl.operatorCodes[op.opcodeIndex].builtinCode == tq.BOP.SOFTMAX]
    assert len(softmax_in) == LAYERS
    assert all(cal._span(tfl, i)[0] <= cal._HUGE_NEGATIVE for i in softmax_in)  # calibrated over the mask
    cal.tame_softmax_inputs(tfl)
    spans = [cal._span(tfl, i) for i in softmax_in]
    assert all(lo > cal._HUGE_NEGATIVE and hi - lo < 200 for lo, hi in spans), spans

    blob, _ = tq.quantize_full_int8(data, samples, io_type="float32")
    cos = [cosine(run_onnx(model, f)["sentence_embedding"], run_tflite(blob, io, f)["sentence_embedding"])
           for f in ({k: v[i] for k, v in _calls(8, 9).items()} for i in range(8))]
    print(f"full-int8 TFLite cosine to float: min {min(cos):.5f} mean {np.mean(cos):.5f}")
    assert min(cos) >= 0.99, cos


def _fc_model(shared: bool):
    """x[1, 64] → MatMul(W) (→ MatMul(W) again when `shared`); W's 32 output columns span
    three orders of magnitude, as a trained transformer's projections do around outlier
    channels."""
    rng = np.random.default_rng(4)
    w = (rng.normal(size=(64, 32)) * np.logspace(-3, 0, 32)[None, :]).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc1")]
    out, width = "y", 32
    if shared:
        w = w[:, :64] if w.shape[1] >= 64 else np.concatenate([w, w[:, ::-1]], axis=1)  # square: [64, 64]
        nodes.append(helper.make_node("MatMul", ["y", "w"], ["z"], name="fc2"))
        out, width = "z", 64
    g = helper.make_graph(nodes, "fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, width])],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), out


@pytest.mark.parametrize("shared", [False, True])
def test_tflite_dynamic_int8_weights_are_per_channel(shared):
    """Dynamic-range int8 stores each fully-connected output channel with its own scale
    (FULLY_CONNECTED version 12, the per-channel hybrid kernel LiteRT runs), so a column
    1000x smaller than the largest keeps its precision; with one scale per matrix its
    values round to a handful of levels. A weight read by two ops is quantised once and both
    ops run the hybrid kernel with asymmetric input quantisation."""
    from edgepack.tflite import quantize as tq
    from edgepack.tflite.convert import convert

    model, out = _fc_model(shared)
    data, io = convert(model)
    blob = tq.to_dynamic_range_int8(data)
    m = tq._load(blob)
    g = m.subgraphs[0]
    fcs = [op for op in g.operators if m.operatorCodes[op.opcodeIndex].builtinCode == tq.BOP.FULLY_CONNECTED]
    assert len(fcs) == (2 if shared else 1)
    for op in fcs:
        w = g.tensors[op.inputs[1]]
        assert w.type == tq.schema.TensorType.INT8
        assert len(w.quantization.scale) == w.shape[0] > 1 and w.quantization.quantizedDimension == 0
        assert op.builtinOptions.asymmetricQuantizeInputs
        assert m.operatorCodes[op.opcodeIndex].version >= 12
    rng = np.random.default_rng(5)
    errors = []
    for _ in range(8):
        x = rng.normal(size=(1, 64)).astype(np.float32)
        ref = run_onnx(model, {"x": x})[out][0]
        got = run_tflite(blob, io, {"x": x})[out][0]
        errors.append(np.abs(got - ref) / (np.abs(ref) + 1e-9))
    # every output channel within a few percent, the small ones too (median over samples)
    per_channel = np.median(np.stack(errors), axis=0)
    print(f"dynamic int8 relative error per output channel: max {per_channel.max():.4f}")
    assert per_channel.max() < 0.05, per_channel


def test_tflite_dynamic_int8_stores_the_embedding_table_int8(encoder):
    """The token-embedding table (read only by GATHER) is stored int8 in the dynamic-range
    model, gathered in int8 and widened by a DEQUANTIZE; the file's weights are then about
    one byte per parameter and the sentence embedding stays within 0.99 cosine of float."""
    from edgepack.tflite import quantize as tq
    from edgepack.tflite.convert import convert

    model, _ = encoder
    data, io = convert(model)
    blob = tq.to_dynamic_range_int8(data)
    m = tq._load(blob)
    g = m.subgraphs[0]
    code = {id(op): m.operatorCodes[op.opcodeIndex].builtinCode for op in g.operators}
    table_gathers = [op for op in g.operators if code[id(op)] == tq.BOP.GATHER
                     and g.tensors[op.inputs[0]].buffer and len(g.tensors[op.inputs[0]].shape) == 2]
    assert table_gathers
    for op in table_gathers:
        assert g.tensors[op.inputs[0]].type == tq.schema.TensorType.INT8
        out = int(op.outputs[0])
        assert g.tensors[out].type == tq.schema.TensorType.INT8
        widen = [o for o in g.operators if out in list(o.inputs)]
        assert [code[id(o)] for o in widen] == [tq.BOP.DEQUANTIZE]
        table = g.tensors[op.inputs[0]]
        assert len(m.buffers[table.buffer].data) == int(np.prod(table.shape))  # one byte per entry
    print(f"dynamic int8 file {len(blob)} bytes (float file {len(data)})")
    assert len(blob) < len(data) / 2
    cos = [cosine(run_onnx(model, f)["sentence_embedding"], run_tflite(blob, io, f)["sentence_embedding"])
           for f in ({k: v[i] for k, v in _calls(8, 9).items()} for i in range(8))]
    print(f"dynamic int8 TFLite cosine to float: min {min(cos):.5f} mean {np.mean(cos):.5f}")
    assert min(cos) >= 0.99, cos
