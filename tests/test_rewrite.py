"""Speed rewrites of the float graph, int8 slowdown causes, and the x86-64 float .ort's layout."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.errors import ModelError
from edgepack.inspection import inspect_artifact
from edgepack.stages.emit.ort import convert_to_ort, host_nchwc_block
from edgepack.stages.rewrite import int8_slowdown_causes, speed_rewrites
from edgepack.targets import OrtSettings, host_arch, resolve_target

C = 8


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _model(nodes, inits, out_shape, opset=13, in_shape=(1, C, 6, 6)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _conv(inp="x", out="c"):
    w = np.random.default_rng(0).standard_normal((C, C, 3, 3)).astype(np.float32) * 0.3
    return helper.make_node("Conv", [inp, "w", "b"], [out], pads=[1, 1, 1, 1]), [
        numpy_helper.from_array(w, "w"), _const("b", np.linspace(-1, 1, C))]


def _run(m, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _x(shape=(1, C, 6, 6), seed=1):
    return (np.random.default_rng(seed).standard_normal(shape) * 4).astype(np.float32)


def _assert_same(before, after, shape=(1, C, 6, 6)):
    x = _x(shape)
    np.testing.assert_allclose(_run(after, x), _run(before, x), rtol=1e-5, atol=1e-5)


def _ops(m):
    return [n.op_type for n in m.graph.node]


def _hard_swish_clip(div_last: bool, by_mul: bool):
    conv, inits = _conv()
    inits += [_const("three", 3.0), _const("zero", 0.0), _const("six", 6.0), _const("sixth", 1 / 6)]
    nodes = [conv, helper.make_node("Add", ["c", "three"], ["a"]),
             helper.make_node("Clip", ["a", "zero", "six"], ["r"])]
    scale = (helper.make_node("Mul", ["%s", "sixth"], ["%s"]) if by_mul
             else helper.make_node("Div", ["%s", "six"], ["%s"]))
    if div_last:  # (x * relu6(x + 3)) / 6, as PaddlePaddle writes it
        nodes.append(helper.make_node("Mul", ["c", "r"], ["m"]))
        scale.input[0], scale.output[0] = "m", "y"
        nodes.append(scale)
    else:  # x * (relu6(x + 3) / 6)
        scale.input[0], scale.output[0] = "r", "h"
        nodes += [scale, helper.make_node("Mul", ["h", "c"], ["y"])]
    return _model(nodes, inits, (1, C, 6, 6))


@pytest.mark.parametrize("div_last", [True, False])
@pytest.mark.parametrize("by_mul", [True, False])
def test_written_out_hard_swish_becomes_hardswish(div_last, by_mul):
    m = _hard_swish_clip(div_last, by_mul)
    new, changes = speed_rewrites(m, hard_swish="fuse")
    assert _ops(new) == ["Conv", "HardSwish"]
    assert new.opset_import[0].version == 14 and any("opset 13 -> 14" in c for c in changes)
    assert any("HardSwish: 1" in c for c in changes)
    _assert_same(m, new)
    assert _ops(m)[-1] in ("Div", "Mul")  # the input model is left alone


def test_hardsigmoid_times_x_becomes_hardswish():
    conv, inits = _conv()
    m = _model([conv, helper.make_node("HardSigmoid", ["c"], ["h"], alpha=1 / 6, beta=0.5),
                helper.make_node("Mul", ["c", "h"], ["y"])], inits, (1, C, 6, 6), opset=14)
    new, changes = speed_rewrites(m, hard_swish="fuse")
    assert _ops(new) == ["Conv", "HardSwish"] and len(changes) == 1
    _assert_same(m, new)


def test_hard_swish_left_alone_when_an_intermediate_is_shared_or_constants_differ():
    m = _hard_swish_clip(div_last=True, by_mul=False)
    m.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, C, 6, 6]))  # r is used twice
    new, changes = speed_rewrites(m, hard_swish="fuse")
    assert "HardSwish" not in _ops(new)
    _assert_same(m, new)
    conv, inits = _conv()
    m = _model([conv, helper.make_node("HardSigmoid", ["c"], ["h"]),  # alpha 0.2: not hard-swish
                helper.make_node("Mul", ["c", "h"], ["y"])], inits, (1, C, 6, 6), opset=14)
    assert "HardSwish" not in _ops(speed_rewrites(m, hard_swish="fuse")[0])


@pytest.mark.parametrize("mode", ["int8", "keep"])
def test_written_out_hard_swish_keeps_int8_friendly_ops(mode):
    m = _hard_swish_clip(div_last=True, by_mul=False)
    new, changes = speed_rewrites(m, hard_swish=mode)
    assert _ops(new) == ["Conv", "Add", "Clip", "Mul", "Mul"]  # the Div by 6 is a Mul by 1/6
    assert any("reciprocal" in c for c in changes)
    _assert_same(m, new)


def test_hardswish_and_hardsigmoid_are_written_as_int8_ops():
    conv, inits = _conv()
    m = _model([conv, helper.make_node("HardSwish", ["c"], ["h"]),
                helper.make_node("HardSigmoid", ["h"], ["y"], alpha=0.2, beta=0.5)], inits, (1, C, 6, 6), opset=14)
    new, changes = speed_rewrites(m, hard_swish="int8")
    assert _ops(new) == ["Conv", "Add", "Clip", "Mul", "Mul", "Mul", "Add", "Clip"]
    assert len(changes) == 2
    _assert_same(m, new)
    # new values are typed, as in a cleaned graph (the calibration measures value_info's float values)
    from edgepack.stages.quantize import calibration_tensors

    assert set(calibration_tensors(new)) >= {o for n in new.graph.node for o in n.output if o != "y"}
    assert _ops(speed_rewrites(m)[0]) == _ops(m)  # "keep", the default


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize("axes", [[2, 3], [-1, -2]])
def test_reduce_mean_over_hw_becomes_global_average_pool(opset, keepdims, axes):
    conv, inits = _conv()
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.asarray(axes, np.int64), "axes"))
        rm = helper.make_node("ReduceMean", ["c", "axes"], ["y"], keepdims=keepdims)
    else:
        rm = helper.make_node("ReduceMean", ["c"], ["y"], axes=axes, keepdims=keepdims)
    m = _model([conv, rm], inits, (1, C, 1, 1) if keepdims else (1, C), opset=opset)
    new, changes = speed_rewrites(m)
    assert _ops(new) == ["Conv", "GlobalAveragePool"] + ([] if keepdims else ["Flatten"])
    assert any("GlobalAveragePool: 1" in c for c in changes)
    _assert_same(m, new)


def test_reduce_mean_over_channels_is_left_alone():
    conv, inits = _conv()
    m = _model([conv, helper.make_node("ReduceMean", ["c"], ["y"], axes=[1])], inits, (1, 1, 6, 6))
    new, changes = speed_rewrites(m)
    assert _ops(new) == _ops(m) and changes == []


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_with_a_constant_becomes_clip(op):
    conv, inits = _conv()
    inits.append(_const("k", -0.4 if op == "Max" else 0.7))
    m = _model([conv, helper.make_node("LeakyRelu", ["c"], ["l"], alpha=0.2),
                helper.make_node(op, ["k", "l"], ["y"])], inits, (1, C, 6, 6))
    new, changes = speed_rewrites(m)
    assert _ops(new) == ["Conv", "LeakyRelu", "Clip"]
    assert any("-> Clip: 1" in c for c in changes)
    _assert_same(m, new)


def test_div_by_a_constant_becomes_mul():
    conv, inits = _conv()
    inits.append(_const("d", np.linspace(1, 3, C).reshape(1, C, 1, 1)))
    m = _model([conv, helper.make_node("Div", ["c", "d"], ["y"])], inits, (1, C, 6, 6))
    new, changes = speed_rewrites(m)
    assert _ops(new) == ["Conv", "Mul"] and len(changes) == 1
    _assert_same(m, new)


def test_gelu_division_is_left_for_onnx_runtimes_gelu_fusion():
    """x * 0.5 * (1 + Erf(x / sqrt 2)): ONNX Runtime fuses it into one Gelu only with the Div,
    so that Div stays (measured on MiniLM: Mul left 6 Erf subgraphs unfused)."""
    conv, inits = _conv()
    inits += [_const("s2", np.array(1.4142135, np.float32)), _const("one", np.array(1.0, np.float32)),
              _const("half", np.array(0.5, np.float32))]
    nodes = [conv, helper.make_node("Div", ["c", "s2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["c", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    m = _model(nodes, inits, (1, C, 6, 6))
    new, changes = speed_rewrites(m)
    assert "Div" in _ops(new) and changes == []
    from edgepack.stages.graph import ort_optimized

    assert "Gelu" in {n.op_type for n in ort_optimized(new, "extended").graph.node}


def test_nothing_to_do_leaves_an_equal_graph():
    conv, inits = _conv(out="y")
    m = _model([conv], inits, (1, C, 6, 6))
    new, changes = speed_rewrites(m)
    assert changes == [] and new == m


def _quantize(float_model, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": _x(seed=s)} for s in range(8)])

        def get_next(self):
            return next(self.it, None)

    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(float_model, str(src))
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
    return src, dst


def test_int8_slowdown_causes_names_float_islands_and_fixable_idioms(tmp_path):
    m = _hard_swish_clip(div_last=True, by_mul=False)
    src, qdq = _quantize(m, tmp_path)
    found = int8_slowdown_causes(src, qdq)
    text = "\n".join(found)
    assert "float island between DequantizeLinear and QuantizeLinear: Div x1" in text
    assert "reduce_range" in text
    assert "reciprocal: 1" in text  # what speed_rewrites would change
    # After the rewrite (hard-swish kept written out, Div -> Mul) no float island is left.
    new, _ = speed_rewrites(m)
    (tmp_path / "b").mkdir()
    src2, qdq2 = _quantize(new, tmp_path / "b")
    assert not any(f.startswith("float island") for f in int8_slowdown_causes(src2, qdq2))


def test_x86_64_float_ort_of_a_rewritten_graph_matches_the_onnx_file(tmp_path):
    """The x86-64 float .ort (portable layout) computes what the ONNX file computes."""
    conv, inits = _conv()
    conv2, inits2 = _conv("h", "c2")
    inits2 = [numpy_helper.from_array(numpy_helper.to_array(inits2[0]), "w2"), _const("b2", np.zeros(C))]
    conv2.input[1:] = ["w2", "b2"]
    m = _model([conv, helper.make_node("HardSigmoid", ["c"], ["s"], alpha=1 / 6, beta=0.5),
                helper.make_node("Mul", ["c", "s"], ["h"]), conv2,
                helper.make_node("ReduceMean", ["c2"], ["y"], axes=[2, 3], keepdims=1)],
               inits + inits2, (1, C, 1, 1), opset=14)
    new, changes = speed_rewrites(m, hard_swish="fuse")
    assert len(changes) == 2
    src = tmp_path / "m.onnx"
    onnx.save(new, str(src))
    ort_path, _ = convert_to_ort(src, tmp_path, "model.float32", resolve_target("x86-64").ort)
    assert not any(k.startswith("com.microsoft.nchwc") for k in inspect_artifact(ort_path)["op_counts"])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(ort_path), so, providers=["CPUExecutionProvider"])
    for seed in range(3):
        x = _x(seed=seed)
        np.testing.assert_allclose(s.run(None, {"x": x})[0], _run(m, x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(host_arch() != "x86_64", reason="NCHWc is x86-64 only")
def test_nchwc_block_is_checked_against_the_build_host(tmp_path):
    block = host_nchwc_block()
    assert block in (8, 16)
    conv, inits = _conv(out="y")
    src = tmp_path / "m.onnx"
    onnx.save(_model([conv], inits, (1, C, 6, 6)), str(src))
    other = 8 if block == 16 else 16
    with pytest.raises(ModelError, match=f"block {other}.*this build host lays out with block {block}"):
        convert_to_ort(src, tmp_path, "m", OrtSettings(target_platform="amd64", nchwc_block=other))
    path, _ = convert_to_ort(src, tmp_path, "m", OrtSettings(target_platform="amd64", nchwc_block=block))
    assert any(k.startswith("com.microsoft.nchwc") for k in inspect_artifact(path)["op_counts"])


def test_layout_at_load_writes_an_onnx_file_that_matches(tmp_path):
    """`layout_at_load`: the float artifact is ONNX (the device's full runtime lays it out at
    load); an int8 graph still becomes an .ort file."""
    conv, inits = _conv(out="y")
    m = _model([conv], inits, (1, C, 6, 6))
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    settings = OrtSettings(target_platform="amd64", layout_at_load=True)
    path, cfg = convert_to_ort(src, tmp_path, "model.float32", settings, layout_at_load=True)
    assert path.name == "model.float32.onnx" and cfg.is_file() and "model.float32.onnx" in cfg.read_text()
    loaded = onnx.load(str(path))
    assert not any(n.domain == "com.microsoft.nchwc" for n in loaded.graph.node)
    x = _x()
    np.testing.assert_allclose(_run(loaded, x), _run(m, x), rtol=1e-5, atol=1e-5)
    (tmp_path / "q").mkdir()
    _, qdq = _quantize(m, tmp_path / "q")
    qpath, _ = convert_to_ort(qdq, tmp_path, "model.int8", settings)
    assert qpath.suffix == ".ort"
    fpath, _ = convert_to_ort(src, tmp_path / "q", "model.float32", settings)  # not asked for: an .ort
    assert fpath.suffix == ".ort"
