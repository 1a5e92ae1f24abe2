"""The x86-64 float artifact (an ONNX file ONNX Runtime lays out at load) keeps the input and
output dims the user's graph declared dynamic, instead of the calibration shape the build pins:
with every dim fixed, ONNX Runtime rewrites 3-D MatMul + Add as Reshape → Gemm → Reshape, which
made the artifact slower than the user's own file (see edgepack.stages.emit.ort._with_declared_dims).
A graph whose dims were fixed in the source stays fixed, and ORT-format artifacts keep the pinned dims."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import cli, explain
from onnx import TensorProto, helper, numpy_helper

from edgepack.stages.emit.ort import convert_to_ort
from edgepack.stages.graph import (
    clean_float_graph,
    declared_dims,
    fix_input_shapes,
    ort_optimized,
    record_declared_dims,
)
from edgepack.targets import host_arch, resolve_target

SEQ, WIDTH = 8, 16


def _mlp(path, dims, out_dims=None):
    """x[dims] → MatMul+Add → Relu → MatMul+Add → y: a transformer's feed-forward block on a
    (batch, sequence, width) input; `dims` as declared (ints, symbols, or -1)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n)
             for n, s in (("w1", (WIDTH, 32)), ("b1", (32,)), ("w2", (32, WIDTH)), ("b2", (WIDTH,)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("Add", ["o", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims or dims)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _clean(src, dest, shape=(1, SEQ, WIDTH)):
    model = onnx.load(str(src))
    onnx.save(clean_float_graph(model, str(src), {"x": shape}), str(dest))
    return dest


def _dims(vi) -> list:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in vi.type.tensor_type.shape.dim]


def _run(path, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _x86_float(float_graph, out_dir):
    out_dir.mkdir(exist_ok=True)
    return convert_to_ort(float_graph, out_dir, "model.float32", resolve_target("x86-64").ort, layout_at_load=True)[0]


def test_x86_float_artifact_keeps_declared_symbolic_dims(tmp_path):
    src = _mlp(tmp_path / "mlp.onnx", ["batch", "sequence", WIDTH])
    clean = _clean(src, tmp_path / "clean.onnx")
    pinned = onnx.load(str(clean))
    assert _dims(pinned.graph.input[0]) == [1, SEQ, WIDTH]  # the build works on the calibration shape
    assert declared_dims(pinned)["inputs"] == {"x": ["batch", "sequence", WIDTH]}

    art = _x86_float(clean, tmp_path)
    assert art.name == "model.float32.onnx"
    model = onnx.load(str(art))
    onnx.checker.check_model(model)
    assert _dims(model.graph.input[0]) == ["batch", "sequence", WIDTH]
    assert _dims(model.graph.output[0])[0] == "batch"

    # it runs on inputs of the pinned shape and computes the float graph's numbers
    x = np.random.default_rng(1).normal(size=(1, SEQ, WIDTH)).astype(np.float32)
    np.testing.assert_allclose(_run(art, x), _run(clean, x), rtol=1e-5, atol=1e-5)



def test_declared_dims_keep_onnx_runtime_from_making_gemms(tmp_path):
    """The reason for keeping them: with every dim fixed, ONNX Runtime's default optimisation
    turns a 3-D MatMul + Add into Reshape → Gemm → Reshape (slower than the MatMul); with the
    declared dims it keeps the MatMul, as it does in the user's own file."""
    src = _mlp(tmp_path / "mlp.onnx", ["batch", "sequence", WIDTH])

    def pinned(record: bool):  # the float graph's pinning step alone (cleaning would fuse already)
        model = onnx.load(str(src))
        if record:
            record_declared_dims(model)
        fix_input_shapes(model, str(src), {"x": (1, SEQ, WIDTH)})
        path = tmp_path / f"pinned-{record}.onnx"
        onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
        return path

    def ops(path) -> list[str]:  # what ONNX Runtime runs when it loads the artifact (default level)
        return [n.op_type for n in ort_optimized(onnx.load(str(path)), "all").graph.node]

    without = _x86_float(pinned(False), tmp_path / "without")
    assert "Gemm" in ops(without), "ONNX Runtime no longer makes Gemms of pinned 3-D MatMuls: revisit the rule"
    art = _x86_float(pinned(True), tmp_path / "with")
    assert "Gemm" not in ops(art) and ops(art).count("MatMul") == 2
    x = np.random.default_rng(3).normal(size=(1, SEQ, WIDTH)).astype(np.float32)
    np.testing.assert_allclose(_run(art, x), _run(without, x), rtol=1e-5, atol=1e-5)


def test_x86_float_artifact_of_a_fixed_source_stays_fixed(tmp_path):
    src = _mlp(tmp_path / "mlp.onnx", [1, SEQ, WIDTH])
    clean = _clean(src, tmp_path / "clean.onnx")
    assert declared_dims(onnx.load(str(clean))) is None
    model = onnx.load(str(_x86_float(clean, tmp_path)))
    assert _dims(model.graph.input[0]) == [1, SEQ, WIDTH]
    assert _dims(model.graph.output[0]) == [1, SEQ, WIDTH]


def test_unnamed_dynamic_dims_come_back_as_symbols(tmp_path):
    """A -1 (or missing) dim is dynamic too; it comes back named, so every dim is a size or a
    symbol (the manifest's artifact I/O shapes are ints and strings)."""
    src = _mlp(tmp_path / "mlp.onnx", [-1, "sequence", WIDTH], ["n", "sequence", WIDTH])
    model = onnx.load(str(_x86_float(_clean(src, tmp_path / "clean.onnx"), tmp_path)))
    batch, seq, width = _dims(model.graph.input[0])
    assert isinstance(batch, str) and batch and seq == "sequence" and width == WIDTH


def test_ort_format_float_artifact_keeps_the_pinned_dims(tmp_path):
    """An .ort file (ARM profiles, minimal builds) is unchanged: the pinned calibration shape."""
    import onnxruntime as ort

    src = _mlp(tmp_path / "mlp.onnx", ["batch", "sequence", WIDTH])
    clean = _clean(src, tmp_path / "clean.onnx")
    art, _ = convert_to_ort(clean, tmp_path, "model.float32", resolve_target("rpi4").ort, layout_at_load=True)
    assert art.suffix == ".ort"
    assert ort.InferenceSession(str(art), providers=["CPUExecutionProvider"]).get_inputs()[0].shape == [1, SEQ, WIDTH]


@pytest.mark.skipif(host_arch() != "x86_64", reason="verifies an x86-64 artifact on the host")
def test_build_ships_declared_dims_and_verifies_on_golden_inputs(tmp_path):
    src = _mlp(tmp_path / "mlp.onnx", ["batch", "sequence", WIDTH])
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(2).normal(size=(16, SEQ, WIDTH)).astype(np.float32))
    out = tmp_path / "out"
    proc = cli("build", "--onnx", src, "--input-shape", f"1,{SEQ},{WIDTH}", "--calib", calib, "--targets", "x86-64",
               "--out", out, "--latency-runs", "2")
    assert proc.returncode in (0, 1), explain(proc)  # 1: some (int8) gate failed; the float one is judged below
    bundle = out / "mlp-0.1.0"
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["model"]["inputs"][0]["shape"] == [1, SEQ, WIDTH]  # the data's (golden) shape
    art = next(a for a in m["targets"]["x86-64"]["artifacts"] if a["kind"] == "ort-float")
    assert art["inputs"][0]["shape"] == ["batch", "sequence", WIDTH]
    assert art["metrics"]["passed"], art["metrics"]["gates"]
    golden = np.load(bundle / "golden" / "inputs.npz")["in_0"]
    want = np.load(bundle / "golden" / "reference_outputs.npz")["arr_0"]
    got = np.stack([_run(bundle / art["path"], x)[0] for x in golden])
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-4, atol=1e-4)
