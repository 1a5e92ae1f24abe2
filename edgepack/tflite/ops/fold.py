"""Constant folding: a node whose inputs are all known constants (or a Constant node) is
evaluated with ONNX's reference evaluator and its outputs bound as constants, so no
TFLite op is emitted for it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..context import Context


def fold_constant(ctx: Context, node) -> bool:
    """Evaluate a node whose inputs are all constants with ONNX's reference evaluator."""
    if node.op_type == "Constant":
        a = {x.name: x for x in node.attribute}
        if "value" in a:
            ctx.bind_const(node.output[0], numpy_helper.to_array(a["value"].t))
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
