"""Parity of the converter's audio / sequence coverage: 1-D Conv, ConvTranspose and pooling,
LSTM and GRU (unrolled), and If (folded, or both branches and a select); then small torch models (a
Conv1d audio net, LSTM/GRU nets with their states as inputs) end to end.

Same harness as test_tflite_ops.py: a small float32 ONNX graph (opset 18, static shapes)
runs in onnxruntime and, converted, in LiteRT; rtol 1e-4 / atol 1e-5. Graphs with several
inputs (recurrent states) are fed all of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nlp_harness import op_names  # noqa: E402
from onnx_graphs import Graph, run_onnx, run_tflite

from edgepack.errors import UnsupportedOperatorError
from edgepack.tflite.convert import convert

RTOL, ATOL = 1e-4, 1e-5
CASES: dict = {}  # id -> build(g) returning the output name(s)


def check(model, feeds, rtol=RTOL, atol=ATOL):
    ref = run_onnx(model, feeds)
    model_bytes, io = convert(model)
    got = run_tflite(model_bytes, io, feeds)
    assert set(got) == set(ref)
    for name in ref:
        assert got[name].shape == ref[name].shape, name
        np.testing.assert_allclose(got[name], ref[name], rtol=rtol, atol=atol, err_msg=name)
    return model_bytes, io


# ---------------------------------------------------------------------------------------
# 1-D convolution and pooling ([N, C, L])

def conv1d(g: Graph, x, cin, cout, k=3, group=1, bias=True, **attributes):
    w = g.random((cout, cin // group, k), 1 / np.sqrt(cin // group * k))
    ins = [x, w] + ([g.random((cout,), 0.1)] if bias else [])
    return g.op("Conv", *ins, group=group, kernel_shape=[k], **attributes)


def seq_in(g: Graph, c=4, length=16, n=1):
    return g.input("x", [n, c, length])


def conv1d_out(g: Graph, cout=6, length=16):
    """An NLC-produced value: a SAME 1-D convolution of the input."""
    return conv1d(g, seq_in(g, length=length), 4, cout, pads=[1, 1])


CONV1D = {
    "same": dict(pads=[1, 1]), "no_bias": dict(pads=[1, 1], bias=False), "valid": {}, "k1": dict(k=1),
    "k5_pads2": dict(k=5, pads=[2, 2]), "stride2": dict(strides=[2], pads=[1, 1]),
    "stride2_odd_length": dict(strides=[2], pads=[1, 1], length=15), "stride3_valid": dict(strides=[3]),
    "dilated": dict(dilations=[2], pads=[2, 2]), "dilated3_valid": dict(dilations=[3]),
    "pads_asymmetric": dict(pads=[0, 2]), "pads_asymmetric_k4": dict(k=4, pads=[2, 1]),
    "same_upper_s1": dict(auto_pad="SAME_UPPER"), "auto_valid_s2": dict(auto_pad="VALID", strides=[2]),
    "same_upper_s2_odd": dict(auto_pad="SAME_UPPER", strides=[2], length=15),
    "same_lower_s2": dict(auto_pad="SAME_LOWER", strides=[2], k=4),
    "grouped": dict(cout=6, group=2, pads=[1, 1]), "grouped_no_bias_s2": dict(cout=8, group=4, strides=[2], bias=False),
    "depthwise": dict(cout=4, group=4, pads=[1, 1]), "depthwise_no_bias_valid": dict(cout=4, group=4, bias=False),
    "depthwise_multiplier2_dilated": dict(cout=8, group=4, dilations=[2], pads=[2, 2]),
    "depthwise_stride2_asym": dict(cout=4, group=4, strides=[2], pads=[0, 1]), "batch2": dict(n=2, pads=[1, 1]),
}
ACTS = {"relu": lambda g, y: g.op("Relu", y),
        "relu6": lambda g, y: g.op("Clip", y, g.const(np.float32(0)), g.const(np.float32(6))),
        "clip": lambda g, y: g.op("Clip", y, g.const(np.float32(-0.5)), g.const(np.float32(0.7)))}


def _conv1d_case(spec, act=None):
    spec = dict(spec)
    n, length, cout = spec.pop("n", 1), spec.pop("length", 16), spec.pop("cout", 6)

    def build(g):
        y = conv1d(g, seq_in(g, 4, length, n), 4, cout, **spec)
        return ACTS[act](g, y) if act else y

    return build


for _id, _spec in CONV1D.items():
    CASES[f"conv1d_{_id}"] = _conv1d_case(_spec)
for _id in ("same", "grouped", "depthwise", "stride2", "pads_asymmetric"):
    for _act in ACTS:
        CASES[f"conv1d_{_id}+{_act}"] = _conv1d_case(CONV1D[_id], _act)
CASES["conv1d_chain_relu_pool"] = lambda g: conv1d(g, g.op("MaxPool", g.op("Relu", conv1d(
    g, g.op("Relu", conv1d_out(g)), 6, 8, strides=[2], pads=[1, 1])), kernel_shape=[2], strides=[2]), 8, 5, k=1)
CASES["conv1d_output_read_twice"] = lambda g: (lambda y: (g.op("Relu", y), conv1d(g, y, 6, 3, pads=[1, 1])))(
    conv1d_out(g))
CASES["conv1d_then_flatten_gemm"] = lambda g: g.op("Gemm", g.op("Flatten", conv1d_out(g, length=5)),
                                                   g.random((30, 7)))
CASES["conv1d_then_transpose_matmul"] = lambda g: g.op("MatMul", g.op("Transpose", conv1d_out(g), perm=[0, 2, 1]),
                                                       g.random((6, 3)))
CASES["conv1d_add_residual"] = lambda g: (lambda y: g.op("Add", y, conv1d(g, y, 6, 6, pads=[1, 1])))(conv1d_out(g))


def _convt1d(k=3, cout=5, bias=True, act=False, **attributes):
    def build(g):
        ins = [seq_in(g, 4, 7), g.random((4, cout, k), 0.3)] + ([g.random((cout,), 0.1)] if bias else [])
        y = g.op("ConvTranspose", *ins, kernel_shape=[k], **attributes)
        return g.op("Relu", y) if act else y

    return build


CASES["convtranspose1d_s2_k2"] = _convt1d(k=2, strides=[2])
CASES["convtranspose1d_s2_k3_no_bias"] = _convt1d(strides=[2], bias=False)
CASES["convtranspose1d_s2_pads_output_padding"] = _convt1d(strides=[2], pads=[1, 1], output_padding=[1])
CASES["convtranspose1d_s2_k4_pads_asym+relu"] = _convt1d(k=4, strides=[2], pads=[1, 2], act=True)
CASES["convtranspose1d_output_shape"] = _convt1d(strides=[2], output_shape=[14])


def _pool1d(op, length=16, **attributes):
    return lambda g: g.op(op, conv1d_out(g, length=length), **attributes)


CASES["maxpool_1d_k2s2"] = _pool1d("MaxPool", kernel_shape=[2], strides=[2])
CASES["maxpool_1d_k3s1_pads1"] = _pool1d("MaxPool", kernel_shape=[3], pads=[1, 1])
CASES["maxpool_1d_k3s2_pads1_odd"] = _pool1d("MaxPool", 15, kernel_shape=[3], strides=[2], pads=[1, 1])
CASES["maxpool_1d_k2s1_pads_asym"] = _pool1d("MaxPool", kernel_shape=[2], pads=[0, 1])
CASES["maxpool_1d_k3s2_ceil"] = _pool1d("MaxPool", kernel_shape=[3], strides=[2], ceil_mode=1)
CASES["maxpool_1d_k3s2_pads1_ceil"] = _pool1d("MaxPool", 15, kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1)
CASES["maxpool_1d_same_upper_s2"] = _pool1d("MaxPool", 15, kernel_shape=[3], strides=[2], auto_pad="SAME_UPPER")
CASES["avgpool_1d_k2s2"] = _pool1d("AveragePool", kernel_shape=[2], strides=[2])
CASES["avgpool_1d_k3s1_pads1_exclude_pad"] = _pool1d("AveragePool", kernel_shape=[3], pads=[1, 1])
CASES["avgpool_1d_k3s1_pads1_include_pad"] = _pool1d("AveragePool", kernel_shape=[3], pads=[1, 1], count_include_pad=1)
CASES["avgpool_1d_k3s2_pads1_include_pad"] = _pool1d("AveragePool", kernel_shape=[3], strides=[2], pads=[1, 1],
                                                     count_include_pad=1)
CASES["avgpool_1d_k2_pads_asym_include_pad"] = _pool1d("AveragePool", kernel_shape=[2], pads=[1, 0],
                                                       count_include_pad=1)
CASES["avgpool_1d_same_upper_s2_exclude_pad"] = _pool1d("AveragePool", 15, kernel_shape=[3], strides=[2],
                                                        auto_pad="SAME_UPPER")
CASES["avgpool_1d_k2s2_ceil_exact"] = _pool1d("AveragePool", kernel_shape=[2], strides=[2], ceil_mode=1)
CASES["maxpool_1d_on_input_pads"] = lambda g: g.op("MaxPool", seq_in(g), kernel_shape=[3], strides=[2], pads=[1, 1])
CASES["avgpool_1d+relu"] = lambda g: g.op("Relu", g.op("AveragePool", conv1d_out(g), kernel_shape=[2], strides=[2]))
CASES["global_average_pool_1d"] = lambda g: g.op("GlobalAveragePool", conv1d_out(g))
CASES["global_max_pool_1d"] = lambda g: g.op("GlobalMaxPool", conv1d_out(g))
CASES["global_average_pool_1d_on_input"] = lambda g: g.op("GlobalAveragePool", seq_in(g))
CASES["global_average_pool_1d_flatten_gemm"] = lambda g: g.op("Gemm", g.op("Flatten", g.op(
    "GlobalAveragePool", conv1d_out(g))), g.random((6, 3)), g.random((3,)))
CASES["reduce_mean_time_1d"] = lambda g: g.op("ReduceMean", conv1d_out(g), g.ints([2]), keepdims=0)


# ---------------------------------------------------------------------------------------
# LSTM and GRU (layout 0: X [seq, batch, input], states [directions, batch, hidden])

def rnn(op, seq=8, hidden=8, inp=5, batch=1, direction="forward", states="input", outputs=(0, 1, 2), bias=True,
        peepholes=False, **attributes):
    def build(g):
        dirs, k = (2 if direction == "bidirectional" else 1), (4 if op == "LSTM" else 3)
        ins = [g.input("x", [seq, batch, inp]), g.random((dirs, k * hidden, inp)), g.random((dirs, k * hidden, hidden)),
               g.random((dirs, 2 * k * hidden), 0.3) if bias else "", ""]
        for name in ("h0", "c0")[:2 if op == "LSTM" else 1] if states else ():
            shape = (dirs, batch, hidden)
            ins.append(g.input(name, shape) if states == "input" else g.random(shape) if states == "const" else
                       g.const(np.zeros(shape)))
        if peepholes:
            ins += [""] * (7 - len(ins)) + [g.random((dirs, 3 * hidden), 0.3)]
        ys = g.op(op, *ins, outputs=3 if op == "LSTM" else 2, hidden_size=hidden, direction=direction, **attributes)
        return [ys[i] for i in outputs if i < len(ys)]

    return build


RNN = {"seq1_h4": dict(seq=1, hidden=4), "seq8_h16": dict(hidden=16), "seq8_h32_in40": dict(hidden=32, inp=40),
       "no_states": dict(states=None), "const_states": dict(states="const"), "zero_states": dict(states="zeros"),
       "no_bias": dict(bias=False), "batch2": dict(batch=2), "reverse": dict(direction="reverse"),
       "bidirectional": dict(direction="bidirectional"), "only_Y": dict(outputs=(0,)), "only_Y_h": dict(outputs=(1,)),
       "bidirectional_seq1_no_states": dict(direction="bidirectional", seq=1, states=None), "clip": dict(clip=0.6)}
for _id, _kw in RNN.items():
    CASES[f"lstm_{_id}"], CASES[f"gru_{_id}"] = rnn("LSTM", **_kw), rnn("GRU", **_kw)
    if _id in ("seq8_h16", "no_states", "bidirectional", "clip", "no_bias"):
        CASES[f"gru_{_id}_linear_before_reset"] = rnn("GRU", **_kw, linear_before_reset=1)
CASES["lstm_only_Y_c"] = rnn("LSTM", outputs=(2,))
CASES["lstm_relu_activations"] = rnn("LSTM", activations=["Relu", "Tanh", "Relu"])
CASES["gru_relu_activation"] = rnn("GRU", activations=["Sigmoid", "Relu"])
CASES["lstm_peepholes"] = rnn("LSTM", peepholes=True)
CASES["lstm_peepholes_bidirectional_no_states"] = rnn("LSTM", peepholes=True, direction="bidirectional", states=None)
CASES["lstm_input_forget"] = rnn("LSTM", input_forget=1)
CASES["lstm_sequence_lens_full"] = lambda g: g.op("LSTM", g.input("x", [6, 1, 3]), g.random((1, 16, 3)),
                                                  g.random((1, 16, 4)), "", g.const(np.asarray([6], np.int32)),
                                                  hidden_size=4, outputs=3)[1]
CASES["lstm_then_gemm_head"] = lambda g: g.op("Gemm", g.op("Reshape", rnn("LSTM", outputs=(1,))(g)[0],
                                                           g.ints([1, 8])), g.random((8, 2)))


# ---------------------------------------------------------------------------------------
# If with a condition that folds


def branch(name, nodes, out):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])


def if_graph(cond_of, then_nodes=None, else_nodes=None):
    """y = conv(x); If(cond_of(g, y)) { then: Relu(y) * 2 } { else: Sigmoid(y) } -> conv; a
    branch's nodes may be given as a function of y (its last node's output is the branch's)."""
    def build(g):
        y = conv1d_out(g)
        then = then_nodes(y) if then_nodes else [
            helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.float32(2))),
            helper.make_node("Relu", [y], ["r"]), helper.make_node("Mul", ["r", "two"], ["t_out"])]
        other = else_nodes(y) if else_nodes else [helper.make_node("Sigmoid", [y], ["e_out"])]
        out = g.op("If", cond_of(g, y), then_branch=branch("then", then, then[-1].output[0]),
                   else_branch=branch("else", other, other[-1].output[0]), name="the_if")
        return conv1d(g, out, 6, 3, pads=[1, 1])

    return build


def _batch_is_one(g, x):  # If(Equal(Shape(x)[0], 1)), as torch exports a batch check
    return g.op("Equal", g.op("Gather", g.op("Shape", x), g.ints(0), axis=0), g.ints(1))


def _nested(y):
    """A branch holding an If (condition: a branch-local Constant) that reads the outer y."""
    inner = helper.make_node("If", ["inner_cond"], ["inner_out"],
                             then_branch=branch("t2", [helper.make_node("Tanh", [y], ["t2o"])], "t2o"),
                             else_branch=branch("e2", [helper.make_node("Neg", [y], ["e2o"])], "e2o"))
    return [helper.make_node("Constant", [], ["inner_cond"], value=numpy_helper.from_array(np.bool_(False))),
            inner, helper.make_node("Add", ["inner_out", y], ["o"])]


CASES["if_const_true"] = if_graph(lambda g, x: g.const(np.bool_(True)))
CASES["if_const_false_node"] = if_graph(lambda g, x: g.op("Constant", value=numpy_helper.from_array(np.bool_(False))))
CASES["if_shape_batch_is_one"] = if_graph(_batch_is_one)
CASES["if_size_false"] = if_graph(lambda g, x: g.op("Greater", g.op("Size", x), g.ints(1000)))
CASES["if_shape_start_end"] = if_graph(lambda g, x: g.op("Equal", g.op("ReduceProd", g.op(
    "Shape", x, start=1, end=-1), keepdims=0), g.ints(6)))
CASES["if_branch_passes_outer_value"] = if_graph(_batch_is_one, then_nodes=lambda y: [
    helper.make_node("Identity", [y], ["o"])])
CASES["if_branch_initializer"] = lambda g: (lambda y: g.op("If", _batch_is_one(g, y), then_branch=helper.make_graph(
    [helper.make_node("Mul", [y, "half"], ["t"])], "then", [], [helper.make_tensor_value_info("t", 1, None)],
    initializer=[numpy_helper.from_array(np.full((6, 1), 0.5, np.float32), "half")]),
    else_branch=branch("else", [helper.make_node("Abs", [y], ["e"])], "e")))(conv1d_out(g))
CASES["if_nested"] = if_graph(_batch_is_one, then_nodes=_nested)
CASES["if_output_is_graph_output"] = lambda g: (lambda x: g.op(
    "If", _batch_is_one(g, x), then_branch=branch("then", [helper.make_node("Relu", [x], ["t"])], "t"),
    else_branch=branch("else", [helper.make_node("Abs", [x], ["e"])], "e")))(conv1d_out(g))


def test_if_on_input_data_selects_between_both_branches():
    """If(sum(conv(x)) > 0), a condition only the data decides (a two-stage classifier's
    gate): both branches are computed and a Where picks. Both signs of the condition match
    ONNX Runtime (x scaled by +100 and -100 flip the sum's sign through the conv)."""
    g = Graph()
    y = conv1d_out(g)
    cond = g.op("Greater", g.op("ReduceSum", y, keepdims=0), g.const(np.float32(0)))
    out = g.op("If", cond, then_branch=branch("then", [helper.make_node("Relu", [y], ["t"])], "t"),
               else_branch=branch("else", [helper.make_node("Sigmoid", [y], ["e"])], "e"), name="the_if")
    model = g.model(out, g.op("Cast", cond, to=TensorProto.FLOAT))
    data, _ = convert(model)
    assert "SELECT_V2" in op_names(data)
    taken = set()
    for scale in (100.0, -100.0):
        feeds = {k: scale * v for k, v in g.feeds().items()}
        check(model, feeds)
        taken.add(float(list(run_onnx(model, feeds).values())[1]))
    assert taken == {0.0, 1.0}, "the two feeds must take both branches"


@pytest.mark.parametrize("case_id", list(CASES))
def test_parity(case_id):
    g = Graph()
    outs = CASES[case_id](g)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    check(g.model(*outs), g.feeds())


REJECTED = {  # id -> (build, words the message must hold besides the node's name)
    "conv3d": (lambda g: g.op("Conv", g.input("x", [1, 2, 4, 4, 4]), g.random((3, 2, 1, 1, 1)), name="the_x"), "1-D"),
    "convtranspose1d_grouped": (lambda g: g.op("ConvTranspose", seq_in(g), g.random((4, 1, 3)), group=4, name="the_x"),
                                "grouped"),
    "maxpool1d_dilated": (lambda g: g.op("MaxPool", seq_in(g), kernel_shape=[2], dilations=[2], name="the_x"),
                          "dilated"),
    "avgpool1d_ceil_adds_window": (lambda g: g.op("AveragePool", seq_in(g, length=15), kernel_shape=[2], strides=[2],
                                                  ceil_mode=1, name="the_x"), "ceil_mode"),
    "avgpool1d_asym_pads_exclude_pad": (lambda g: g.op("AveragePool", seq_in(g), kernel_shape=[3], pads=[0, 2],
                                                       name="the_x"), "count_include_pad"),
    "lstm_activation_hardsigmoid": (rnn("LSTM", activations=["HardSigmoid", "Tanh", "Tanh"], name="the_x"),
                                    "activations"),
    "lstm_layout1": (lambda g: g.op("LSTM", g.input("x", [1, 4, 3]), g.random((1, 8, 3)), g.random((1, 8, 2)),
                                    hidden_size=2, layout=1, name="the_x"), "layout"),
    "lstm_sequence_lens_input": (lambda g: g.inputs.append(helper.make_tensor_value_info("n", TensorProto.INT32, [1]))
                                 or g.op("LSTM", g.input("x", [4, 1, 3]), g.random((1, 8, 3)), g.random((1, 8, 2)),
                                         "", "n", hidden_size=2, name="the_x"), "sequence_lens"),
    "gru_sequence_lens_short": (lambda g: g.op("GRU", g.input("x", [4, 1, 3]), g.random((1, 6, 3)), g.random((1, 6, 2)),
                                               "", g.const(np.asarray([3], np.int32)), hidden_size=2, name="the_x"),
                                "sequence_lens"),
    "gru_weight_input": (lambda g: g.op("GRU", g.input("x", [4, 1, 3]), g.input("w", [1, 6, 3]), g.random((1, 6, 2)),
                                        hidden_size=2, name="the_x"), "constant"),
}


@pytest.mark.parametrize("kind", list(REJECTED))
def test_unsupported_raises(kind):
    g = Graph()
    build, words = REJECTED[kind]
    out = build(g)
    with pytest.raises(UnsupportedOperatorError) as e:
        convert(g.model(*(out if isinstance(out, list) else [out])))
    assert "'the_" in str(e.value) and words in str(e.value), str(e.value)


# ---------------------------------------------------------------------------------------
# small torch models, exported and cleaned as the pipeline does


def _sqnr_db(ref, test) -> float:
    noise = np.sum((ref.astype(np.float64) - test) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / noise))


def _torch_onnx(module, args, path):
    import contextlib
    import io
    import warnings

    import onnx
    import torch

    from edgepack.stages.export import export_torch
    from edgepack.stages.graph import clean_float_graph

    if len(args) == 1:
        export_torch(module, tuple(args[0].shape), path)
    else:  # export_torch takes one input; several: the same dynamo exporter directly
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), tuple(args), dynamo=True, opset_version=18,
                              external_data=False).save(str(path), external_data=False)
    return clean_float_graph(onnx.load(str(path)), path.name)


def _audio_net(torch):
    """[1, 40, 100] mel frames -> (Conv1d, BatchNorm, ReLU) x 3 with a max-pool -> global pool -> Linear."""
    layers = []
    for cin, cout, kw in ((40, 32, dict(padding=1)), (32, 32, dict(stride=2, padding=1)),
                          (32, 64, dict(padding=2, dilation=2, groups=32))):
        bn = torch.nn.BatchNorm1d(cout)
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
        layers += [torch.nn.Conv1d(cin, cout, 3, **kw), bn, torch.nn.ReLU()]
    layers[3:3] = [torch.nn.MaxPool1d(3, 2, padding=1)]
    head = [torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(64, 12)]
    return torch.nn.Sequential(*layers, *head), [(1, 40, 100)]


def _recurrent(torch, rnn, head, shapes):
    """forward(x, *states) -> (head(y), *final states): the recurrent state in and out as graph I/O."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = rnn, head

        def forward(self, x, *states):
            y, s = self.rnn(x, states if len(states) == 2 else states[0])
            return (self.head(y), *(s if isinstance(s, tuple) else (s,)))

    return Net(), shapes


def _vad_lstm(torch):  # 8 frames of 40 features, 2 layers, (h0, c0) as inputs
    head = torch.nn.Sequential(torch.nn.Linear(32, 1), torch.nn.Sigmoid())
    return _recurrent(torch, torch.nn.LSTM(40, 32, num_layers=2), head, [(8, 1, 40), (2, 1, 32), (2, 1, 32)])


def _bigru(torch):
    return _recurrent(torch, torch.nn.GRU(16, 12, bidirectional=True), torch.nn.Identity(), [(6, 1, 16), (2, 1, 12)])


@pytest.mark.parametrize("make", [_audio_net, _vad_lstm, _bigru], ids=["conv1d_audio", "lstm_vad", "bigru"])
def test_torch_model(make, tmp_path):
    torch = pytest.importorskip("torch")
    from edgepack.tflite.quantize import to_dynamic_range_int8, to_float16

    torch.manual_seed(0)
    module, shapes = make(torch)
    model = _torch_onnx(module.eval(), [torch.zeros(s) for s in shapes], tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.normal(0, 1, s).astype(np.float32) for i, s in zip(model.graph.input, shapes)}
    ref = run_onnx(model, feeds)
    model_bytes, io = convert(model)
    for variant, floor in ((model_bytes, 80), (to_float16(model_bytes), 30), (to_dynamic_range_int8(model_bytes), 15)):
        got = run_tflite(variant, io, feeds)
        for k in ref:
            assert got[k].shape == ref[k].shape and _sqnr_db(ref[k], got[k]) >= floor, (k, _sqnr_db(ref[k], got[k]))
