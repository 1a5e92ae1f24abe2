"""ONNX-level pre-pass: replace each `If` whose condition folds to a constant by the nodes
of the branch it takes.

A value folds when it is an initializer, a Constant, the Shape/Size of a value whose
shape inference knows statically, or the output of a deterministic node whose inputs all
fold (e.g. `If(Equal(Gather(Shape(x), 0), 1))`). The condition's cone is evaluated with
ONNX's reference evaluator; the taken branch's nodes and initializers are spliced in at
the If's place with branch-local names renamed apart, branch outputs bound to the If's
outputs and outer-scope references kept. Nodes nothing reads any more (the condition's
cone) are then dropped.

An If whose condition depends on input data (a two-stage classifier that runs its second
stage only above a threshold) becomes both branches and a Where per output: the same
values, computed with both branches on every call. Its branches' outputs must broadcast
together, which shape inference of the result checks.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import UnsupportedOperatorError, one_line

_NOT_FOLDABLE = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}


def inline_foldable_ifs(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every top-level If inlined (or turned into a select), including Ifs a
    branch brings up; the model itself when it has none."""
    if not any(_is_if(n) for n in model.graph.node):
        return model
    copy = _clone(model)
    while True:
        at = next((k for k, n in enumerate(copy.graph.node) if _is_if(n)), None)
        if at is None:
            break
        take = _condition(copy, copy.graph.node[at])
        if take is None:
            _splice_select(copy.graph, at)
        else:
            _splice(copy.graph, at, take)
    _drop_dead(copy.graph)
    return copy


def _clone(message):
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _is_if(node) -> bool:
    return node.op_type == "If" and node.domain in ("", "ai.onnx")


def _fail(node, why: str):
    raise UnsupportedOperatorError(f"node '{node.name}' (If): {why}")


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
    return shapes


def _condition(model: onnx.ModelProto, node) -> bool | None:
    """The If's condition, evaluated over its cone; None when input data reaches it."""
    g = model.graph
    shapes = _static_shapes(model)
    producers = {o: n for n in g.node for o in n.output if o}
    inits = {i.name: i for i in g.initializer}
    cone: list[onnx.NodeProto] = []
    seen: set[str] = set()

    def visit(name: str) -> str | None:
        """Add the producers of `name` to the cone; the name of a data value that blocks it."""
        if not name or name in seen or name in inits:
            return None
        seen.add(name)
        n = producers.get(name)
        if n is None:
            return name  # a graph input
        if n.op_type in ("Shape", "Size") and n.input[0] in shapes:
            shape = shapes[n.input[0]]
            if n.op_type == "Size":
                value = np.asarray(int(np.prod(shape)), np.int64)
            else:
                a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
                value = np.asarray(shape[a.get("start", 0):a.get("end", len(shape))], np.int64)
            cone.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value)))
            return None
        if n.op_type in _NOT_FOLDABLE or n.domain not in ("", "ai.onnx") or \
                any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            return name
        for i in n.input:
            blocked = visit(i)
            if blocked:
                return blocked
        cone.append(n)
        return None

    cond = node.input[0]
    blocked = visit(cond)
    if blocked:
        return None  # depends on input data: both branches and a select
    value = numpy_helper.to_array(inits[cond]) if cond in inits else _evaluate(model, node, cone, inits)
    if value.size != 1:
        _fail(node, f"the condition '{cond}' has {value.size} elements, not one")
    return bool(value.reshape(-1)[0])


def _evaluate(model: onnx.ModelProto, node, cone, inits) -> np.ndarray:
    cond = node.input[0]
    used = {i for n in cone for i in n.input}
    sub = helper.make_graph(cone, "if_condition", [], [helper.make_empty_tensor_value_info(cond)],
                            initializer=[inits[i] for i in used if i in inits])
    try:
        from onnx.reference import ReferenceEvaluator

        cond_model = helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
        return np.asarray(ReferenceEvaluator(cond_model).run(None, {})[0])
    except Exception as exc:
        _fail(node, f"its condition '{cond}' could not be evaluated: {one_line(exc)}")


def _names(graph: onnx.GraphProto, out: set[str]) -> set[str]:
    """Every value name in `graph` and its subgraphs."""
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        out.add(vi.name)
    out.update(i.name for i in graph.initializer)
    for n in graph.node:
        out.update(n.input)
        out.update(n.output)
        for sub in _subgraphs(n):
            _names(sub, out)
    return out


def _subgraphs(node):
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _rename(node, mapping: dict[str, str]) -> None:
    """Rename `node`'s inputs and outputs, and the outer-scope references of its subgraphs."""
    for field in (node.input, node.output):
        for k, name in enumerate(field):
            field[k] = mapping.get(name, name)
    for sub in _subgraphs(node):
        for n in sub.node:
            _rename(n, mapping)


def _inline_branch(node, take_then: bool, dsts: list[str], used: set[str]):
    """The nodes and initializers of one branch of If `node`, names renamed apart (`used`
    grows), the branch outputs written to `dsts`."""
    branch = next(a.g for a in node.attribute if a.name == ("then_branch" if take_then else "else_branch"))
    if len(branch.sparse_initializer):
        _fail(node, "a branch with sparse initializers is not supported")
    produced = {o for n in branch.node for o in n.output if o}
    prefix = f"{node.name or 'if'}/{'then' if take_then else 'else'}"
    mapping: dict[str, str] = {}
    for name in sorted(produced | {i.name for i in branch.initializer}):
        new, k = f"{prefix}/{name}", 1
        while new in used:
            new, k = f"{prefix}/{name}_{k}", k + 1
        used.add(new)
        mapping[name] = new
    bound: set[str] = set()
    tail = []
    for src, dst in zip([o.name for o in branch.output], dsts):
        if not dst:
            continue
        if src in produced and src not in bound:
            mapping[src] = dst  # the branch node writes the output directly
            bound.add(src)
        else:  # an outer-scope value, an initializer or an output listed twice
            tail.append(helper.make_node("Identity", [mapping.get(src, src)], [dst], name=f"{prefix}/{dst}_identity"))
    nodes = []
    for n in branch.node:
        copy = _clone(n)
        if copy.name:
            copy.name = f"{prefix}/{copy.name}"
        _rename(copy, mapping)
        nodes.append(copy)
    inits = []
    for init in branch.initializer:
        copy = _clone(init)
        copy.name = mapping[init.name]
        inits.append(copy)
    return nodes + tail, inits


def _replace(g: onnx.GraphProto, at: int, nodes: list, inits: list) -> None:
    """Put `nodes` where `g.node[at]` was; its outputs' stale shapes go (re-inferred)."""
    stale = set(g.node[at].output)
    g.initializer.extend(inits)
    kept_info = [vi for vi in g.value_info if vi.name not in stale]
    del g.value_info[:]
    g.value_info.extend(kept_info)
    old = [_clone(n) for n in g.node]
    del g.node[:]
    g.node.extend(old[:at] + nodes + old[at + 1:])


def _splice(g: onnx.GraphProto, at: int, take_then: bool) -> None:
    """Replace the If node `g.node[at]` by the nodes of the branch it takes."""
    node = _clone(g.node[at])
    _replace(g, at, *_inline_branch(node, take_then, list(node.output), _names(g, set())))


def _splice_select(g: onnx.GraphProto, at: int) -> None:
    """Replace a data-dependent If by both branches and a Where per output: the same values,
    at the cost of computing both branches on every call."""
    node = _clone(g.node[at])
    used = _names(g, set())

    def fresh(name):
        new, k = name, 1
        while new in used:
            new, k = f"{name}_{k}", k + 1
        used.add(new)
        return new

    then_out = [fresh(f"{o}__then") if o else "" for o in node.output]
    else_out = [fresh(f"{o}__else") if o else "" for o in node.output]
    then_nodes, then_inits = _inline_branch(node, True, then_out, used)
    else_nodes, else_inits = _inline_branch(node, False, else_out, used)
    select = [helper.make_node("Where", [node.input[0], t, e], [o], name=f"{node.name or 'if'}/select_{k}")
              for k, (o, t, e) in enumerate(zip(node.output, then_out, else_out)) if o]
    _replace(g, at, then_nodes + else_nodes + select, then_inits + else_inits)


def _drop_dead(g: onnx.GraphProto) -> None:
    """Drop nodes no graph output depends on."""
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed([_clone(n) for n in g.node]):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
            for sub in _subgraphs(n):
                needed.update(_names(sub, set()))
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
