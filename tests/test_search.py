"""The accuracy-aware search, end to end on a model whose int8 fails the way a wake-word
classifier does: its sigmoid outputs are tiny (~1e-4) while a few calibration samples reach
0.27, so one uint8 scale over the output rounds almost every value to 0.

Each build is real (ONNX Runtime's quantiser, the .ort converter, the verifier); the shipped
artifact is then checked independently with onnxruntime and onnx.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import cli, explain, load_manifest, ort_session, run_batches, same_isa_target, sqnr_db, write_toml
from onnx import TensorProto, helper, numpy_helper


def _wake_model(path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (32, 24)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 32).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.15, (4, 32)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.full(4, -9.0, np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="hidden"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["z"], transB=1, name="score"),
             helper.make_node("Sigmoid", ["z"], ["p"], name="sigmoid")]
    g = helper.make_graph(nodes, "wake", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24])],
                          [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 4])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    calib = rng.normal(size=(64, 1, 24)).astype(np.float32)
    calib[:4] *= 6  # a few "detections" stretch the output range to ~0.27
    evaluation = rng.normal(size=(100, 1, 24)).astype(np.float32)
    return path, calib, evaluation


def _build(d, *, search: str, gate: float = 20.0):
    model, calib, evaluation = _wake_model(d / "wake.onnx")
    np.save(d / "calib.npy", calib)
    np.save(d / "eval.npy", evaluation)
    cfg = write_toml(d / "edgepack.toml", f"""
        name = "wake"
        out = "dist"
        targets = ["{same_isa_target()}"]

        [model]
        onnx = "wake.onnx"

        [data]
        calibration = "calib.npy"
        evaluation = "eval.npy"

        [gates]
        min_sqnr_db = {gate}

        [search]
        {search}

        [verify]
        latency_runs = 5
    """)
    proc = cli("build", cfg)
    return proc, d / "dist" / "wake-0.1.0", evaluation


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("search"), search="max_trials = 8")


def test_search_finds_an_int8_artifact_that_holds_the_gate(searched):
    proc, bundle, _ = searched
    assert proc.returncode == 0, explain(proc)
    t = load_manifest(bundle)["targets"][same_isa_target()]
    (run,) = t["search"]["runs"]
    trials = t["search"]["trials"]
    assert run["kind"] == "ort-int8" and run["stopped"] == "the gates hold"
    assert trials[0]["name"] == "as built" and trials[0]["passed"] is False
    assert trials[0]["metrics"]["sqnr_db"] < 5  # the collapse the search starts from
    chosen = trials[run["chosen"]]
    assert chosen["passed"] is True and chosen["metrics"]["sqnr_db"] >= 20
    assert all(not tr["passed"] for tr in trials[1:run["chosen"]])  # it stopped at the first that holds
    for tr in trials:
        assert tr["latency_p50_ms"] > 0 and tr["size_bytes"] > 0 and tr["why"]
    a = next(a for a in t["artifacts"] if a["kind"] == "ort-int8")
    assert a["metrics"]["passed"] is True
    assert a["quantization"]["search_trial"] == run["chosen"]


def test_shipped_artifact_is_the_chosen_trial_checked_independently(searched):
    """The .ort in the bundle, run by onnxruntime, reproduces the manifest's SQNR; the nodes
    the chosen trial kept float compute in float: nothing quantises their outputs in its QDQ graph."""
    _, bundle, evaluation = searched
    t = load_manifest(bundle)["targets"][same_isa_target()]
    run = t["search"]["runs"][0]
    chosen = t["search"]["trials"][run["chosen"]]
    a = next(a for a in t["artifacts"] if a["kind"] == "ort-int8")
    x = evaluation[:, 0]  # (N, 24): one model call per row
    want = run_batches(ort_session(bundle / "baseline" / "model.float.onnx"), x)
    got = run_batches(ort_session(bundle / a["path"]), x)
    assert sqnr_db(want, got) == pytest.approx(a["metrics"]["numerics"]["host"]["sqnr_db"], abs=0.05)
    assert sqnr_db(want, got) >= 20
    kept = set(chosen["settings"]["keep_float"])
    assert kept and kept == set(a["quantization"]["kept_float"])
    qdq = onnx.load(str(bundle / a["reference_graph"]["path"]))
    quantised = {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    nodes = {n.name: n for n in qdq.graph.node}
    for name in kept:
        assert not set(nodes[name].output) & quantised, name
    # the node counts say the same: every compute node is quantised but the ones kept float
    counts = a["quantized_ops"]
    assert counts["quantized_nodes"] == counts["compute_nodes"] - len(kept)
    assert {nodes[n].op_type for n in kept} <= set(counts["float_op_types"])


def test_report_shows_every_trial_and_the_diagnosis(searched):
    _, bundle, _ = searched
    m = load_manifest(bundle)
    t = m["targets"][same_isa_target()]
    report = (bundle / "report.md").read_text()
    assert "### Accuracy search: `ort-int8`" in report
    for tr in t["search"]["trials"]:
        assert f"| {tr['index']} | {tr['kind']} | {tr['name']} |" in report
    a = next(a for a in t["artifacts"] if a["kind"] == "ort-int8")
    names = {n["name"] for n in a["diagnosis"]["nodes"]}
    assert {"hidden", "score"} <= names  # the quantised Gemms of the profile's int8 graph
    assert "### Per-node diagnosis: `ort-int8`" in report
    assert "search trials" in (bundle / "report.html").read_text()


def test_search_stops_at_its_trial_budget(tmp_path):
    proc, bundle, _ = _build(tmp_path, search="max_trials = 1")
    assert proc.returncode == 1, explain(proc)
    t = load_manifest(bundle)["targets"][same_isa_target()]
    (run,) = t["search"]["runs"]
    assert len(t["search"]["trials"]) == 2 and run["stopped"] == "budget spent: 1 trials"
    assert "sqnr" in proc.stderr.lower()


def test_search_off(tmp_path):
    proc, bundle, _ = _build(tmp_path, search="max_trials = 0")
    assert proc.returncode == 1, explain(proc)
    t = load_manifest(bundle)["targets"][same_isa_target()]
    assert t["search"] is None


def _if_model(path):
    """y = If(sr == 16000, Gemm_a(x), Gemm_b(x)): every weight and op inside the If's branches,
    which ONNX Runtime's quantiser does not enter (as Silero VAD v4's export)."""
    rng = np.random.default_rng(2)

    def branch(name, seed):
        w = numpy_helper.from_array(np.random.default_rng(seed).normal(0, 0.3, (4, 16)).astype(np.float32), f"w_{name}")
        return helper.make_graph([helper.make_node("Gemm", ["x", f"w_{name}"], [f"y_{name}"], transB=1)], name, [],
                                 [helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, [1, 4])], [w])

    nodes = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array(16000, np.int64))),
             helper.make_node("Equal", ["sr", "k"], ["is16k"]),
             helper.make_node("If", ["is16k"], ["y"], then_branch=branch("a", 1), else_branch=branch("b", 2))]
    g = helper.make_graph(nodes, "vad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16]),
                                         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return rng


def test_an_int8_graph_with_no_quantised_node_is_not_shipped_as_int8(tmp_path):
    rng = _if_model(tmp_path / "vad.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(16, 1, 16)).astype(np.float32),
             sr=np.full(16, 16000, np.int64))
    proc = cli("build", "--onnx", tmp_path / "vad.onnx", "--calib", tmp_path / "calib.npz", "--targets", "x86-64",
               "--out", tmp_path / "dist", "--latency-runs", "2")
    assert proc.returncode == 1, explain(proc)  # a required artifact is missing: the bundle is written, failed
    t = load_manifest(tmp_path / "dist" / "vad-0.1.0")["targets"]["x86-64"]
    assert [a["kind"] for a in t["artifacts"]] == ["ort-float"]
    (n,) = t["not_produced"]
    assert n["kind"] == "ort-int8" and n["required"] and "quantised no node" in n["reason"]
    assert "Traceback" not in proc.stderr
