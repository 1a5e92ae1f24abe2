"""Constant folding: a node whose inputs are all known constants (or a Constant node) is
evaluated with ONNX's reference evaluator and its outputs bound as constants, so no
TFLite op is emitted for it. Shape and Size of any value are constants too (every shape
is static here), so shape arithmetic — Shape → Gather → Concat → Reshape,
ConstantOfShape, Range — folds away.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..context import Context, attrs
from ._common import converter, fail


def fold_constant(ctx: Context, node) -> bool:
    """Evaluate a node whose inputs are all constants with ONNX's reference evaluator."""
    if node.op_type == "Constant":
        a = {x.name: x for x in node.attribute}
        if "value" in a:
            ctx.bind_const(node.output[0], numpy_helper.to_array(a["value"].t))
            return True
    if node.op_type in ("Shape", "Size") and node.input[0] in ctx.values:
        shape = ctx.shape(node.input[0])
        if node.op_type == "Size":
            ctx.bind_const(node.output[0], np.asarray(int(np.prod(shape)), np.int64))
        else:
            a = attrs(node)
            start, end = a.get("start", 0), a.get("end", len(shape))
            ctx.bind_const(node.output[0], np.asarray(shape[slice(start, end)], np.int64))
        return True
    ins = [i for i in node.input if i]
    if node.op_type == "Constant" or (ins and all(ctx.const(i) is not None for i in ins)):
        from onnx.reference import ReferenceEvaluator

        graph_inputs = [onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(ctx.const(i).dtype),
                                                           ctx.const(i).shape) for i in ins]
        g = onnx.helper.make_graph([node], "fold", graph_inputs,
                                   [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o])
        m = onnx.helper.make_model(g, opset_imports=ctx.onnx.opset_import)
        results = ReferenceEvaluator(m).run(None, {i: ctx.const(i) for i in ins})
        for o, r in zip([o for o in node.output if o], results):
            ctx.bind_const(o, np.asarray(r))
        return True
    return False


@converter("ConstantOfShape", "Range", "NonZero", "OneHot")
def must_fold(ctx: Context, node):
    """Ops edgepack computes only when their inputs are constants (then they were folded)."""
    fail(node, "its inputs must be constants (a statically known shape); here they depend on the model input")
