"""The ONNX → TFLite operator table: `CONVERTERS` maps an ONNX op type to `fn(ctx, node)`.

Each converter reads its node's inputs through the Context (in the layout it needs),
emits TFLite ops, and binds its outputs with their layout. Attributes a converter cannot
honour exactly raise UnsupportedOperatorError naming the node: a model either converts
faithfully or not at all. Converters live in one module per op family and register
themselves with `@converter(...)` (from `_common`) when imported below; `fold_constant`
and `rewrite_patterns` are the driver's two steps besides the table.
"""

from . import conv, dense, elementwise, pool, resize, shape  # noqa: F401  (importing registers the converters)
from . import gather as _gather  # noqa: F401  (Gather, Expand, Tile)
from . import logic as _logic  # noqa: F401  (comparisons, logic, Where)
from . import norm as _norm  # noqa: F401  (LayerNormalization, Erf)
from . import recurrent as _recurrent  # noqa: F401  (LSTM, GRU)
from . import reduce as _reduce  # noqa: F401  (ReduceProd, ReduceL1/L2/SumSquare)
from ._common import CONVERTERS, converter
from .fold import fold_constant
from .patterns import rewrite_patterns

__all__ = ["CONVERTERS", "converter", "fold_constant", "rewrite_patterns"]
