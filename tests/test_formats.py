"""Number formats beyond float32 / int8 (edgepack.stages.formats): each kind written by the real
writers, loaded by the real runtimes and compared with float."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import cli, explain, load_manifest, same_isa_target, sqnr_db
from onnx import TensorProto, helper, numpy_helper

from edgepack.config import QuantOverrides
from edgepack.inspection import inspect_artifact
from edgepack.stages import formats
from edgepack.stages.data import Dataset
from edgepack.stages.emit import GraphSet, emit_kinds
from edgepack.stages.graph import clean_float_graph
from edgepack.stages.quantize import calibrate, quantize_static, ranges_by_name, resolve_settings
from edgepack.targets import resolve_target
from edgepack.verification.runtimes import open_artifact

SHAPE = (1, 3, 16, 16)
NEW_KINDS = ("ort-float16", "ort-dynamic-int8", "ort-int16", "ort-int8-pot", "ort-binary", "ort-ternary",
             "tflite-int16x8")


def small_cnn(path):
    """Conv(3->16)+Relu, Conv(16->32, stride 2)+Relu, GAP, MatMul(32->24)+Add+Relu, Gemm(24->10).

    Weights lie on a per-output-channel int8 grid (k * scale, |k| <= 127, 127 reached), so
    8-bit weight rounding costs nothing and int8 / int16x8 differ by their activations only
    (with Gaussian weights both sit near 35 dB here, limited by the int8 weights)."""
    rng = np.random.default_rng(0)

    def init(name, shape, std):
        if len(shape) == 1:
            return numpy_helper.from_array(rng.normal(0, std, shape).astype(np.float32), name)
        axis = 1 if name == "w3" else 0  # MatMul weights: output channels last
        k = np.clip(np.round(rng.normal(0, 40, shape)), -127, 127)
        k = np.moveaxis(k, axis, 0)
        k.reshape(k.shape[0], -1)[:, 0] = 127
        k = np.moveaxis(k, 0, axis)
        scale = std * 3 / 127
        return numpy_helper.from_array((k * scale).astype(np.float32), name)

    inits = [init("w1", (16, 3, 3, 3), 0.3), init("b1", (16,), 0.1), init("w2", (32, 16, 3, 3), 0.1),
             init("b2", (32,), 0.1), init("w3", (32, 24), 0.2), init("b3", (24,), 0.1), init("w4", (10, 24), 0.3),
             init("b4", (10,), 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["flat", "w3"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "b3"], ["mma"], name="mm_bias"),
        helper.make_node("Relu", ["mma"], ["r3"], name="relu3"),
        helper.make_node("Gemm", ["r3", "w4", "b4"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(clean_float_graph(model, "small_cnn"), str(path))
    return path


def samples(n, seed):
    return np.random.default_rng(seed).normal(0, 1, (n, *SHAPE[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    # evaluated on calibration samples: nothing clips, so each format's own rounding is what is measured
    calib = samples(32, 1)
    return write_all(tmp_path_factory.mktemp("formats"), calib, calib[:24])


def write_all(d, calib_x, x):
    """Every new kind (and the int8 ones to compare with) through the real writers, for x86-64;
    each artifact's outputs on `x` from the runtime the host verifier opens it with."""
    float_path = small_cnn(d / "float.onnx")
    calib = Dataset.of(calib_x, name="x")
    profile = resolve_target("x86-64")
    settings = resolve_settings(profile, QuantOverrides())
    tensors = calibrate(float_path, calib, settings)
    qdq = quantize_static(float_path, None, settings, d / "int8.qdq.onnx", ranges=tensors)
    graphs = GraphSet(float_onnx=float_path, int8_qdq=qdq, calibration=calib, quant_settings=settings,
                      ranges=ranges_by_name(tensors))
    kinds = ("ort-float", "ort-int8", "tflite-float32", "tflite-int8", *NEW_KINDS)
    artifacts, missing = emit_kinds(kinds, graphs, profile.model_copy(update={"artifacts": kinds}), d / "out")
    assert missing == []
    ref = open_artifact(float_path).run
    want = np.concatenate([ref({"x": x[i:i + 1]})[0] for i in range(len(x))])
    by_kind = {}
    for a in artifacts:
        session = open_artifact(a.path, 1, a.layout)  # the host verifier's runtime interface
        got = np.concatenate([session.run({"x": x[i:i + 1]})[0] for i in range(len(x))])
        by_kind[a.kind] = (a, got)
    return {"float": want, "artifacts": by_kind, "float_path": float_path}


def test_every_kind_is_written_with_its_precision(built):
    precision = {k: a.precision for k, (a, _) in built["artifacts"].items()}
    assert {k: precision[k] for k in NEW_KINDS} == {
        "ort-float16": "float16", "ort-dynamic-int8": "dynamic-int8", "ort-int16": "int16x8",
        "ort-int8-pot": "int8", "ort-binary": "binary", "ort-ternary": "ternary", "tflite-int16x8": "int16x8"}
    names = {k: a.path.name for k, (a, _) in built["artifacts"].items()}
    assert len(set(names.values())) == len(names), names
    for kind in NEW_KINDS:
        a, got = built["artifacts"][kind]
        assert np.all(np.isfinite(got)), kind
        json.dumps(a.quantization)  # the manifest record is plain JSON
        if a.runtime == "onnxruntime":
            assert a.path.read_bytes()[4:8] == b"ORTM" and a.reference_onnx.parent == a.path.parent


def test_float16_is_close_to_float(built):
    a, got = built["artifacts"]["ort-float16"]
    want = built["float"]
    # measured 3e-4 on this model: float16 activations carry 11 significant bits
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 2e-3
    assert inspect_artifact(a.path)["weight_dtypes"].get("float16", 0) >= 4
    ref = onnx.load(str(a.reference_onnx))
    assert {i.data_type for i in ref.graph.initializer if i.name.startswith("w")} == {TensorProto.FLOAT16}


def test_dynamic_int8_quantises_the_matmul(built):
    a, got = built["artifacts"]["ort-dynamic-int8"]
    assert sqnr_db(built["float"], got) > 30
    ops = {n.op_type for n in onnx.load(str(a.reference_onnx)).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    assert "Conv" in ops  # no int8-weight ConvInteger kernel in ONNX Runtime's CPU build


@pytest.mark.parametrize("runtime", ["ort", "tflite"])
def test_int16x8_is_much_closer_to_float_than_int8(built, runtime):
    arts = built["artifacts"]
    int8 = arts["ort-int8" if runtime == "ort" else "tflite-int8"][1]
    int16 = arts["ort-int16" if runtime == "ort" else "tflite-int16x8"][1]
    s8, s16 = sqnr_db(built["float"], int8), sqnr_db(built["float"], int16)
    assert s16 > s8 + 10, (s8, s16)


def test_int16_qdq_graph_has_int16_activations(built):
    a, _ = built["artifacts"]["ort-int16"]
    m = onnx.load(str(a.reference_onnx))
    inits = {i.name: i for i in m.graph.initializer}
    zps = [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and {z.data_type for z in zps} == {TensorProto.INT16}
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 21
    assert a.quantization["activation_type"] == "int16"


def test_power_of_two_scales(built):
    a, got = built["artifacts"]["ort-int8-pot"]
    m = onnx.load(str(a.reference_onnx))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    scales = np.concatenate([inits[n.input[1]].ravel().astype(np.float64) for n in qdq])
    exponents = np.log2(scales)
    assert np.array_equal(exponents, np.round(exponents)), "a scale is not 2^k"
    assert formats.all_scales_power_of_two(m)
    # symmetric int8 activations: every activation zero point is 0
    for n in qdq:
        if n.input[0] not in inits and len(n.input) > 2:
            assert inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any()
    # weights requantised from the float weights with the new (larger or equal) scale
    floats = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(built["float_path"])).graph.initializer}
    w_dq = next(n for n in qdq if n.input[0] == "w2_quantized")
    q, s = inits[w_dq.input[0]], inits[w_dq.input[1]]
    np.testing.assert_array_equal(q, np.round(floats["w2"] / s.reshape(-1, 1, 1, 1)).astype(np.int8))
    assert a.quantization["scheme"] == "static QDQ, power-of-two scales (fixed-point)"
    # accuracy stays near int8 (measured here: int8 33 dB, pot 25 dB; argmax agreement 96-100 %)
    want = built["float"]
    int8 = built["artifacts"]["ort-int8"][1]
    assert sqnr_db(want, got) > min(sqnr_db(want, int8) - 10, 18)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.85


def test_pot_rounds_up():
    s = np.array([0.3, 0.25, 1e-3, 3.0], np.float32)
    np.testing.assert_array_equal(formats.pot(s), [0.5, 0.25, 2.0 ** -9, 4.0])


@pytest.mark.parametrize("mode,values", [("binary", {-1, 1}), ("ternary", {-1, 0, 1})])
def test_binary_and_ternary_weights(built, mode, values):
    a, got = built["artifacts"][f"ort-{mode}"]
    assert np.all(np.isfinite(got))
    m = onnx.load(str(a.reference_onnx))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    dqs = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 4  # both convs, the MatMul and the Gemm
    n_weights = n_channels = 0
    for n in dqs:
        codes, alpha = inits[n.input[0]], inits[n.input[1]]
        axis = next(at.i for at in n.attribute if at.name == "axis")
        assert codes.dtype == np.int8
        moved = np.moveaxis(codes, axis, 0).reshape(codes.shape[axis], -1)
        for row in moved:  # exactly 2 (binary) or 3 (ternary) values per output channel
            assert set(np.unique(row).tolist()) == values
        n_weights += codes.size
        n_channels += alpha.size
    bits = {"binary": 1, "ternary": 2}[mode]
    q = a.quantization
    assert q["bitpacked_weight_bytes"] == -(-n_weights * bits // 8) + 4 * n_channels
    assert q["note"] == "research mode: runtimes store and compute these as int8/float; no speed gain"
    assert inspect_artifact(a.path)["weight_dtypes"].get("int8", 0) >= 4


def test_lowbit_codes_follow_xnor_and_twn():
    w = np.array([[0.5, -1.5, 0.1, -0.1], [2.0, 2.0, -2.0, 0.0]], np.float32)
    codes, alpha = formats.lowbit_codes(w, 0, "binary")
    np.testing.assert_array_equal(codes, [[1, -1, 1, -1], [1, 1, -1, 1]])
    np.testing.assert_allclose(alpha, [0.55, 1.5])
    codes, alpha = formats.lowbit_codes(w, 0, "ternary")
    # delta = 0.7 * mean|w| = 0.385 and 1.05: keeps |w| above it, alpha = their mean
    np.testing.assert_array_equal(codes, [[1, -1, 0, 0], [1, 1, -1, 0]])
    np.testing.assert_allclose(alpha, [1.0, 2.0])


def test_build_with_every_new_kind(tmp_path):
    """A user's profile file asks for the new kinds; `edgepack build` writes, verifies and records them."""
    src = small_cnn(tmp_path / "small.onnx")
    kinds = ["ort-float", "ort-int8", "tflite-float32", *NEW_KINDS]
    profile = tmp_path / "formats.toml"
    profile.write_text(_profile_toml(same_isa_target(), kinds))
    calib, evald = tmp_path / "calib.npy", tmp_path / "eval.npy"
    np.save(calib, samples(16, 1))
    np.save(evald, samples(16, 2))
    out = tmp_path / "out"
    proc = cli("build", "--onnx", src, "--calib", calib, "--eval", evald, "--targets", profile, "--out", out,
               "--latency-runs", "2")
    assert proc.returncode in (0, 1), explain(proc)
    m = load_manifest(out / "small-0.1.0")
    entry = m["targets"]["formats"]
    assert entry["not_produced"] == [], explain(proc)
    got = {a["kind"]: a for a in entry["artifacts"]}
    assert set(got) == set(kinds)
    assert got["ort-binary"]["precision"] == "binary" and got["ort-binary"]["quantization"]["bitpacked_weight_bytes"]
    assert got["ort-int8-pot"]["reference_graph"]["path"].endswith("model.int8-pot.qdq.onnx")
    assert got["tflite-int16x8"]["quantization"]["activation_type"] == "int16"
    for kind in NEW_KINDS:
        assert got[kind]["metrics"]["numerics"]["host"]["sqnr_db"] is not None, kind
    # gates judge the new kinds like any other: on this unlabelled data, SQNR >= 30 dB
    passed = {k: a["metrics"]["passed"] for k, a in got.items()}
    assert all(passed[k] for k in ("ort-float16", "ort-dynamic-int8", "ort-int16", "tflite-int16x8")), passed
    assert not passed["ort-binary"] and not passed["ort-ternary"]  # research mode: no retraining
    assert (out / "small-0.1.0" / "report.md").is_file()


def _profile_toml(name: str, kinds) -> str:
    """The shipped profile as TOML with its artifact list replaced (and no size gates: the
    small model's per-channel scales and int32 biases are large next to its weights)."""
    from conftest import REPO

    src = (REPO / "targets" / f"{name}.toml").read_text()
    lines = []
    for line in src.splitlines():
        if line.startswith("artifacts ="):
            line = "artifacts = [" + ", ".join(f'"{k}"' for k in kinds) + "]"
        if line.startswith(("max_weight_ratio", "max_int8_size_ratio", "max_size_ratio")):
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"
