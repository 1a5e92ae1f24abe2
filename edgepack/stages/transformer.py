"""Transformer structure in an ONNX graph, recognised from its shape (never from names).

What the int8 QDQ graph of a transformer keeps float, as the field does it (NNCF's
transformer preset, ONNX Runtime's dynamic quantisation): int8 goes into the MatMul/Gemm
inputs (weights and activations); the residual stream, the LayerNorms on it, the
embedding lookup, GELU, the attention softmax with its scale and mask, and the softmax·V
MatMul stay float.

Measured on all-MiniLM-L6-v2 (6 layers, 48 sentences, cosine of the sentence embedding to
float; ONNX Runtime 1.32, uint8 activations, per-channel int8 weights):

- every op ONNX Runtime can quantise in int8 (LayerNorm, Gather, Reshape, residual-feeding
  MatMul/Gemm outputs; only the masked Softmax float): 0.854 (reduce_range) / 0.864;
- MatMul/Gemm inputs only, outputs still quantised: 0.948 / 0.950 — the FFN output
  (|x| up to ~200) and the residual sum (~230) in one uint8 scale each;
- and Gemm outputs float: 0.9899 / 0.9910; and the residual Add reading the float
  LayerNorm output, not its int8 copy (DedicatedQDQPair): 0.9908 / 0.9917;
- and the softmax·V MatMul float: 0.9913 / 0.9922 (the preset below), at 0.50x the float
  model's latency on an AVX-512 VNNI host (1 thread, min of 25 interleaved runs on a loaded
  host; int8 everywhere: 0.45x).
- Symmetric Q·Kᵀ inputs (TensorQuantOverrides) on top: +0.0000 / +0.0004; not used.
- All MatMul outputs float (not only Gemm): 0.9905, but ONNX Runtime then leaves the Q/K
  projections as float Gemm on dequantised weights: 0.8x float latency; not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

# Ops that only move or relabel values between the pieces of a pattern.
_PASS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Cast", "Identity", "Dropout", "Flatten"}
_LAYER_NORMS = {"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                "SkipSimplifiedLayerNormalization"}
_GELUS = {"Gelu", "FastGelu", "BiasGelu", "QuickGelu"}

# What ONNX Runtime's quantiser is told when a transformer is found: outputs of Gemm (the
# FFN projections whose sum with the residual stream spans hundreds) stay float, and a
# tensor read by several int8 consumers and by float ones (a LayerNorm output feeding
# Q, K, V and the residual Add) gets one Q/DQ pair per int8 consumer while the float
# consumers read the float tensor.
ORT_OPTIONS = {"OpTypesToExcludeOutputQuantization": ["Gemm"], "DedicatedQDQPair": True}

REASONS = {
    "softmax": "attention softmax (with its scale, mask and NaN guard): probabilities computed float",
    "softmax_v": "softmax·V MatMul: attention probabilities in [0, 1] lose their small weights in one uint8 scale "
                 "(NNCF transformer preset; MiniLM +0.0005 cosine measured)",
    "layer_norm": "LayerNorm on the residual stream: outlier channels (|x| up to ~200 in MiniLM) would take one "
                  "per-tensor int8 scale",
    "residual": "residual Add: the residual stream stays float (only MatMul branches read an int8 copy)",
    "embedding": "embedding sum (token + position + type): float; the lookup itself reads an int8 table",
    "gelu": "GELU: elementwise, float (int8 only in MatMul/Gemm)",
    "other": "transformer: int8 only in MatMul/Gemm inputs; bias Adds (the attention output's feeds the "
             "residual stream), layout and pooling ops run float",
}
# The only ops a transformer runs in int8 (Conv: a patch embedding or a hybrid's convolutions).
INT8_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose"}


@dataclass
class Attention:
    qk: str                       # the Q·Kᵀ MatMul (two activation inputs)
    softmax: str
    sv: str                       # the softmax·V MatMul
    scale: list[str] = field(default_factory=list)  # Div/Mul by a constant on the scores
    mask: str | None = None       # Add/Sub/Where applying the mask to the scores
    guard: list[str] = field(default_factory=list)  # pass-through ops, NaN guard (IsNaN + Where)


@dataclass
class Transformer:
    attention: list[Attention]
    layer_norms: list[list[str]]  # one node (fused) or the pieces of a decomposed LayerNorm
    residual_adds: list[str]
    embeddings: list[str]         # Gather(s) from a float table and the Adds summing them
    lookups: list[str]            # of which the Gathers: int8 (the table is often half the weights)
    gelus: list[list[str]]
    others: list[str] = field(default_factory=list)  # every other node but MatMul/Gemm

    def float_nodes(self) -> dict[str, str]:
        """Node name -> reason, for every node the preset keeps float."""
        keep: dict[str, str] = {}
        for a in self.attention:
            for n in [a.softmax, *a.scale, *([a.mask] if a.mask else []), *a.guard]:
                keep[n] = REASONS["softmax"]
            keep[a.sv] = REASONS["softmax_v"]
        for ln in self.layer_norms:
            keep.update({n: REASONS["layer_norm"] for n in ln})
        keep.update({n: REASONS["residual"] for n in self.residual_adds})
        keep.update({n: REASONS["embedding"] for n in self.embeddings if n not in self.lookups})
        for g in self.gelus:
            keep.update({n: REASONS["gelu"] for n in g})
        for n in self.others:
            keep.setdefault(n, REASONS["other"])
        return {n: why for n, why in keep.items() if n}  # ONNX Runtime excludes nodes by name


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.nodes = list(g.node)
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {i.name: i for i in g.initializer}
        self.consts = {o for n in g.node if n.op_type == "Constant" for o in n.output} | set(self.inits)

    def is_const(self, t: str) -> bool:
        if t in self.consts:
            return True
        p = self.producer.get(t)  # a constant seen through a pass-through op (e.g. Cast of a scalar)
        return p is not None and p.op_type in _PASS and bool(p.input) and self.is_const(p.input[0])

    def only_consumer(self, t: str):
        c = self.consumers.get(t, [])
        return c[0] if len(c) == 1 else None

    def back(self, t: str, extra=()) -> tuple[str, list]:
        """Follow `t` up through pass-through ops; (tensor computed by a real op, ops passed)."""
        passed = []
        p = self.producer.get(t)
        while p is not None and (p.op_type in _PASS or p.op_type in extra) and p.input:
            passed.append(p)
            t = p.input[0]
            p = self.producer.get(t)
        return t, passed


def find(model: onnx.ModelProto) -> Transformer | None:
    """The transformer structure of `model`, or None when it has no attention block."""
    g = _Graph(model)
    attention = [a for a in (_attention(g, n) for n in g.nodes if n.op_type == "Softmax") if a is not None]
    if not attention:
        return None
    ln_nodes = _layer_norms(g)
    layer_norms = [[n.name for n in ln] for ln in ln_nodes]
    ln_inputs = {ln[0].input[0]: ln[0].name for ln in ln_nodes}
    residual = [n.name for n in g.nodes if n.op_type == "Add" and len(n.input) == 2
                and not any(g.is_const(i) for i in n.input) and n.output[0] in ln_inputs]
    masks = {a.mask for a in attention}
    residual = [r for r in residual if r not in masks]
    embeddings = _embeddings(g, ln_inputs)
    lookups = {n.name for n in g.nodes if n.op_type == "Gather" and n.name in embeddings}
    others = [n.name for n in g.nodes if n.op_type not in INT8_OPS and n.op_type != "Constant"
              and n.name not in lookups]
    return Transformer(attention, layer_norms, residual, embeddings, sorted(lookups), _gelus(g), others)


def _scores(g: _Graph, t: str):
    """(Q·Kᵀ MatMul, scale ops, pass-through ops) when `t` is MatMul(a, b) of two activations,
    maybe scaled by constants (Div/Mul) and re-laid-out on the way; else None."""
    scale, passed = [], []
    t, p_ = g.back(t)
    passed += p_
    p = g.producer.get(t)
    while p is not None and len(p.input) == 2 and ((p.op_type == "Div" and g.is_const(p.input[1])) or (
            p.op_type == "Mul" and g.is_const(p.input[1]) != g.is_const(p.input[0]))):
        scale.append(p)
        t, p_ = g.back(p.input[1] if g.is_const(p.input[0]) else p.input[0])
        passed += p_
        p = g.producer.get(t)
    if p is None or p.op_type != "MatMul" or any(g.is_const(i) for i in p.input):
        return None
    return p, scale, passed


def _attention(g: _Graph, softmax) -> Attention | None:
    """MatMul(a, b) → (Div/Mul by a constant) → (Add/Sub/Where mask) → Softmax → MatMul(·, V)."""
    t, guard = g.back(softmax.input[0])
    guard = list(guard)
    mask = None
    found = _scores(g, t)
    p = g.producer.get(t)
    if found is None and p is not None and p.op_type in ("Add", "Sub", "Where"):
        for i in (p.input[1:] if p.op_type == "Where" else p.input):
            found = _scores(g, i)
            if found is not None:
                mask = p.name
                break
    if found is None:
        return None
    qk, scale, passed = found
    guard += passed
    scale = [n.name for n in scale]
    # forward: Softmax → (pass-through, NaN guard Where(IsNaN(s), 0, s)) → MatMul input 0
    t, after = softmax.output[0], []
    for _ in range(8):
        cons = g.consumers.get(t, [])
        mm = [c for c in cons if c.op_type == "MatMul" and c.input[0] == t and not g.is_const(c.input[1])]
        if mm:
            return Attention(qk.name, softmax.name, mm[0].name, scale, mask,
                             [n.name for n in guard] + [n.name for n in after])
        nxt = None
        for c in cons:
            if c.op_type in _PASS:
                nxt = c
            elif c.op_type == "Where" and t in c.input[1:]:
                nxt = c
            elif c.op_type == "IsNaN":
                after.append(c)
        if nxt is None:
            return None
        after.append(nxt)
        t = nxt.output[0]
    return None


def _layer_norms(g: _Graph) -> list[list]:
    """LayerNorms, each as its nodes (the first reads the normalised input)."""
    found = [[n] for n in g.nodes if n.op_type in _LAYER_NORMS]
    # decomposed: ReduceMean(x) → Sub(x, mean) → Pow(·, 2) → ReduceMean → Add(eps) → Sqrt → Div(sub, ·)
    #             → Mul(gamma) → Add(beta)
    for mean in (n for n in g.nodes if n.op_type == "ReduceMean"):
        x = mean.input[0]
        sub = next((c for c in g.consumers.get(mean.output[0], []) if c.op_type == "Sub" and c.input[0] == x), None)
        if sub is None:
            continue
        nodes, d = [mean, sub], sub.output[0]
        sq = next((c for c in g.consumers.get(d, []) if c.op_type == "Pow"
                   or (c.op_type == "Mul" and c.input[0] == c.input[1] == d)), None)
        div = next((c for c in g.consumers.get(d, []) if c.op_type == "Div" and c.input[0] == d), None)
        if sq is None or div is None:
            continue
        chain, t = [sq], sq.output[0]
        while True:
            c = g.only_consumer(t)
            if c is None or c is div or c.op_type not in ("ReduceMean", "Add", "Sqrt", "Reciprocal"):
                break
            chain.append(c)
            t = c.output[0]
        nodes += chain + [div]
        t = div.output[0]
        for op in ("Mul", "Add"):
            c = g.only_consumer(t)
            if c is not None and c.op_type == op and any(g.is_const(i) for i in c.input):
                nodes.append(c)
                t = c.output[0]
        found.append(nodes)
    return found


def _embeddings(g: _Graph, ln_inputs: dict) -> list[str]:
    """Gathers from a float 2-D table by runtime indices, and the Adds that sum them into
    the first LayerNorm."""
    out = []
    for n in g.nodes:
        table = g.inits.get(n.input[0]) if n.op_type == "Gather" else None
        if table is None or table.data_type != onnx.TensorProto.FLOAT or len(table.dims) != 2 \
                or g.is_const(n.input[1]):
            continue
        out.append(n.name)
        t = n.output[0]
        for _ in range(4):
            c = g.only_consumer(t)
            if c is None or c.op_type != "Add" or t in ln_inputs:
                break
            out.append(c.name)
            t = c.output[0]
    return list(dict.fromkeys(out))


def _gelus(g: _Graph) -> list[list[str]]:
    found = [[n.name] for n in g.nodes if n.op_type in _GELUS]
    # x · 0.5 · (1 + erf(x / √2)), in any order of the constant factors
    for erf in (n for n in g.nodes if n.op_type == "Erf"):
        nodes = [erf]
        p = g.producer.get(erf.input[0])
        if p is not None and p.op_type in ("Div", "Mul") and any(g.is_const(i) for i in p.input):
            nodes.insert(0, p)
        t = erf.output[0]
        for _ in range(3):
            c = g.only_consumer(t)
            if c is None or c.op_type not in ("Add", "Mul"):
                break
            nodes.append(c)
            t = c.output[0]
        found.append([n.name for n in nodes])
    return found
