"""Recurrent layers: ONNX LSTM and GRU, unrolled over their static sequence length.

Each direction projects the whole input sequence once (one FULLY_CONNECTED over
[seq, batch, input], UNPACKed per step); each step is FULLY_CONNECTED on the previous
hidden state plus LOGISTIC/TANH/RELU and MUL/ADD/SUB — ops every TFLite kernel set and
LiteRT's quantiser handle, with the initial states free to be graph inputs (TFLite's fused
sequence-LSTM keeps its state in variable tensors instead). Y, Y_h and Y_c are PACKed from
the steps; any subset may be read. A zero initial state (absent, or constant zeros) costs
no ops. Supported: forward, reverse and bidirectional, layout 0, activations
Sigmoid/Tanh/Relu, clip, peepholes, input_forget, linear_before_reset; sequence_lens only
when absent or equal to the sequence length everywhere.
"""

from __future__ import annotations

import numpy as np

from ..builder import options
from ..context import Context, attrs, identity
from ._common import BOP, converter, fail

_ACTIVATIONS = {"Sigmoid": BOP.LOGISTIC, "Tanh": BOP.TANH, "Relu": BOP.RELU}
_BINARY = {BOP.ADD: "AddOptions", BOP.MUL: "MulOptions", BOP.SUB: "SubOptions",
           BOP.MINIMUM: "MaximumMinimumOptions", BOP.MAXIMUM: "MaximumMinimumOptions"}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


class _Cell:
    """Emits one direction's ops; None stands for an all-zero tensor (no op emitted)."""

    def __init__(self, ctx: Context, node, acts, clip, tag: str):
        self.ctx, self.node, self.acts, self.clip, self.tag = ctx, node, acts, clip, tag
        self.consts: dict = {}

    def tensor(self, shape) -> int:
        return self.ctx.b.tensor(self.tag, shape)

    def weight(self, array) -> int:
        """A float32 constant tensor, one for all the steps that use the same values."""
        array = np.ascontiguousarray(array, np.float32)
        key = (array.shape, array.tobytes())
        if key not in self.consts:
            self.consts[key] = self.ctx.b.const(f"{self.tag}_const", array)
        return self.consts[key]

    def const(self, array) -> int | None:
        return self.weight(array) if np.any(array) else None

    def binary(self, op, a, b):
        shape = np.broadcast_shapes(self.ctx.b.shape_of(a), self.ctx.b.shape_of(b))
        out = self.tensor(shape)
        self.ctx.b.op(op, [a, b], [out], *options(_BINARY[op]))
        return out

    def add(self, a, b):
        return b if a is None else a if b is None else self.binary(BOP.ADD, a, b)

    def sub(self, a, b):
        return a if b is None else self.binary(BOP.SUB, a, b)  # `a` is never zero here

    def mul(self, a, b):
        return None if a is None or b is None else self.binary(BOP.MUL, a, b)

    def fc(self, x, weight: np.ndarray, bias: np.ndarray | None = None, keep_dims: bool = False):
        """x @ weight.T (+ bias) over the last axis of x."""
        if x is None:
            return None
        shape = self.ctx.b.shape_of(x)
        out = self.tensor((*shape[:-1], weight.shape[0]) if keep_dims else (int(np.prod(shape[:-1])), weight.shape[0]))
        b = -1 if bias is None or not np.any(bias) else self.weight(bias)
        self.ctx.b.op(BOP.FULLY_CONNECTED, [x, self.weight(weight), b], [out],
                      *options("FullyConnectedOptions", keepNumDims=keep_dims))
        return out

    def act(self, which: int, x):
        """Activation `which` (0: f, 1: g, 2: h) of x, clipped for the gates (as onnxruntime:
        the cell state LSTM's h reads is not clipped); x is never zero here."""
        if self.clip is not None and which != 2:
            lo, hi = self.weight(np.float32(-self.clip)), self.weight(np.float32(self.clip))
            x = self.binary(BOP.MAXIMUM, self.binary(BOP.MINIMUM, x, hi), lo)
        out = self.tensor(self.ctx.b.shape_of(x))
        self.ctx.b.op(_ACTIVATIONS[self.acts[which]], [x], [out])
        return out

    def split(self, x, parts: int):
        shape = self.ctx.b.shape_of(x)
        outs = [self.tensor((*shape[:-1], shape[-1] // parts)) for _ in range(parts)]
        self.ctx.b.op(BOP.SPLIT, [self.ctx.b.const("axis", np.asarray(len(shape) - 1, np.int32)), x], outs,
                      *options("SplitOptions", numSplits=parts))
        return outs

    def pack(self, xs, axis: int):
        shape = list(self.ctx.b.shape_of(xs[0]))
        out = self.tensor(shape[:axis] + [len(xs)] + shape[axis:])
        self.ctx.b.op(BOP.PACK, xs, [out], *options("PackOptions", valuesCount=len(xs), axis=axis))
        return out

    def unpack(self, x, n: int):
        shape = self.ctx.b.shape_of(x)
        if n == 1:
            out = self.tensor(shape[1:])
            self.ctx.reshape_to(x, out, shape[1:])
            return [out]
        outs = [self.tensor(shape[1:]) for _ in range(n)]
        self.ctx.b.op(BOP.UNPACK, [x], outs, *options("UnpackOptions", num=n, axis=0))
        return outs


def _lstm_step(cell: _Cell, xw, h, c, r, p, input_forget: bool):
    i, o, f, g = cell.split(cell.add(xw, cell.fc(h, r)), 4)
    p_i, p_o, p_f = (cell.const(v) for v in np.split(p, 3))
    i = cell.act(0, cell.add(i, cell.mul(c, p_i)))
    if input_forget:  # the forget gate coupled to the input gate
        f = cell.sub(cell.weight(np.float32(1)), i)
    else:
        f = cell.act(0, cell.add(f, cell.mul(c, p_f)))
    c = cell.add(cell.mul(f, c), cell.mul(i, cell.act(1, g)))
    o = cell.act(0, cell.add(o, cell.mul(c, p_o)))
    return cell.mul(o, cell.act(2, c)), c


def _gru_step(cell: _Cell, xw, h, r_w, rb_h, linear_before_reset: bool):
    hidden = r_w.shape[1]
    x_z, x_r, x_h = cell.split(xw, 3)
    if h is None:
        h_z, h_r, h_h = None, None, cell.const(rb_h) if linear_before_reset else None
    elif linear_before_reset:
        h_z, h_r, h_h = cell.split(cell.fc(h, r_w, np.concatenate([np.zeros(2 * hidden, np.float32), rb_h])), 3)
    else:
        h_z, h_r = cell.split(cell.fc(h, r_w[:2 * hidden]), 2)
    z = cell.act(0, cell.add(x_z, h_z))
    r = cell.act(0, cell.add(x_r, h_r))
    if linear_before_reset:
        n = cell.act(1, cell.add(x_h, cell.mul(r, h_h)))
    else:
        n = cell.act(1, cell.add(x_h, cell.fc(cell.mul(r, h), r_w[2 * hidden:])))
    return cell.sub(n, cell.mul(z, cell.sub(n, h))), None  # (1 - z) * n + z * h


def _initial_states(ctx: Context, node, name: str, dirs: int, tag: str) -> list:
    """Per direction, the [batch, hidden] initial state tensor, or None when zero."""
    if not name or (ctx.const(name) is not None and not np.any(ctx.const(name))):
        return [None] * dirs
    if len(ctx.shape(name)) != 3:
        fail(node, f"initial state '{name}' must have rank 3 [directions, batch, hidden]")
    cell = _Cell(ctx, node, (), None, f"{node.name or node.output[0]}_{tag}")
    return cell.unpack(ctx.get(name, identity(3)), dirs)


@converter("LSTM", "GRU")
def recurrent(ctx: Context, node):
    a = attrs(node)
    lstm = node.op_type == "LSTM"
    direction = _text(a.get("direction", "forward"))
    dirs = 2 if direction == "bidirectional" else 1
    if a.get("layout", 0) != 0:
        fail(node, "layout=1 (batch first) is not supported; export with layout=0 (sequence first)")
    ins = list(node.input) + [""] * (8 - len(node.input))
    x = ins[0]
    if len(ctx.shape(x)) != 3 or ctx.value(x).dtype != np.float32:
        fail(node, "the input must be a float32 [sequence, batch, input] tensor")
    seq, batch, _ = ctx.shape(x)
    w = ctx.require_const(ins[1], node, "W").astype(np.float32)
    r = ctx.require_const(ins[2], node, "R").astype(np.float32)
    gates, hidden = (4 if lstm else 3), a.get("hidden_size", r.shape[-1])
    b = ctx.require_const(ins[3], node, "B").astype(np.float32) if ins[3] else \
        np.zeros((dirs, 2 * gates * hidden), np.float32)
    if ins[4]:
        lens = ctx.const(ins[4])
        if lens is None or np.any(lens != seq):
            fail(node, f"sequence_lens must be absent or constant {seq} (the sequence length) for every batch entry")
    p = ctx.require_const(ins[7], node, "P").astype(np.float32) if lstm and ins[7] else \
        np.zeros((dirs, 3 * hidden), np.float32)
    per_dir = 3 if lstm else 2
    acts = [_text(s) for s in a.get("activations", [])] or ["Sigmoid", "Tanh", "Tanh"][:per_dir] * dirs
    if len(acts) == per_dir and dirs == 2:
        acts = acts * 2
    if any(s not in _ACTIVATIONS for s in acts):
        fail(node, f"activations {acts}: only {', '.join(_ACTIVATIONS)} are supported")
    lbr = bool(a.get("linear_before_reset", 0))
    hs0 = _initial_states(ctx, node, ins[5], dirs, "h0")
    cs0 = _initial_states(ctx, node, ins[6], dirs, "c0") if lstm else [None] * dirs
    xin = ctx.get(x, identity(3))
    ys, h_last, c_last = [], [], []
    for d in range(dirs):
        cell = _Cell(ctx, node, acts[d * per_dir:(d + 1) * per_dir], a.get("clip"), f"{node.name or 'rnn'}_d{d}")
        wb, rb = np.split(b[d], 2)
        if lstm or not lbr:
            x_bias = wb + rb
        else:  # the hidden gate's recurrent bias sits inside r * (...): added per step
            x_bias = wb + np.concatenate([rb[:2 * hidden], np.zeros(hidden, np.float32)])
        xws = cell.unpack(cell.fc(xin, w[d], x_bias, keep_dims=True), seq)
        h, c, steps = hs0[d], cs0[d], [None] * seq
        for t in (range(seq - 1, -1, -1) if direction == "reverse" or d == 1 else range(seq)):
            if lstm:
                h, c = _lstm_step(cell, xws[t], h, c, r[d], p[d], bool(a.get("input_forget", 0)))
            else:
                h, c = _gru_step(cell, xws[t], h, r[d], rb[2 * hidden:], lbr)
            steps[t] = h
        ys.append(cell.pack(steps, 0))
        h_last.append(h)
        c_last.append(c)
    _bind(ctx, node, 0, ys, 1, (seq, dirs, batch, hidden))
    _bind(ctx, node, 1, h_last, 0, (dirs, batch, hidden))
    if lstm:
        _bind(ctx, node, 2, c_last, 0, (dirs, batch, hidden))


def _bind(ctx: Context, node, k: int, per_dir: list, axis: int, shape) -> None:
    """Bind output `k` (if read) from per-direction tensors stacked on `axis`."""
    if len(node.output) <= k or not node.output[k]:
        return
    out = ctx.output(node.output[k], shape)
    if len(per_dir) == 1:
        ctx.reshape_to(per_dir[0], out, shape)
    else:
        ctx.b.op(BOP.PACK, per_dir, [out], *options("PackOptions", valuesCount=len(per_dir), axis=axis))
