"""Resize and Upsample (4-D, spatial axes only) as TFLite RESIZE_BILINEAR or
RESIZE_NEAREST_NEIGHBOR in NHWC, accepted only when TFLite's coordinate mapping picks
exactly the pixels ONNX's mode (coordinate transformation, nearest rounding, scales) does.
"""

from __future__ import annotations

import math

import numpy as np

from ..builder import options
from ..context import NHWC, Context, attrs
from ._common import BOP, converter, fail, static_shape

# ONNX (coordinate_transformation_mode, nearest_mode) → TFLite RESIZE_NEAREST_NEIGHBOR
# (align_corners, half_pixel_centers) choosing the same source pixel at every scale.
_NEAREST = {
    ("asymmetric", "floor"): (False, False),  # both floor(x * in / out)
    ("tf_half_pixel_for_nn", "floor"): (False, True),  # both floor((x + 0.5) * in / out)
    ("half_pixel", "round_prefer_ceil"): (False, True),  # floor((x + 0.5) * in / out - 0.5 + 0.5)
    ("align_corners", "round_prefer_ceil"): (True, False),  # round half up x * (in - 1) / (out - 1)
}


def _nearest_flags(ctm: str, nearest_mode: str, in_hw, out_hw):
    """TFLite flags equivalent to an ONNX nearest resize, or None."""
    if (ctm, nearest_mode) in _NEAREST:
        return _NEAREST[ctm, nearest_mode]
    # At integer up-scaling factors s, two more modes pick floor(x / s): half_pixel rounds
    # (x + 0.5) / s - 0.5, which lies strictly within 0.5 of it; asymmetric rounds x / s,
    # whose fraction (s - 1) / s stays at or below the tie 0.5 only while s <= 2.
    factors = [o // i if o % i == 0 else 0 for i, o in zip(in_hw, out_hw)]
    if all(factors) and nearest_mode == "round_prefer_floor" and (
            ctm == "half_pixel" or (ctm == "asymmetric" and max(factors) <= 2)):
        return False, False
    return None


def _check_resize_scales(ctx: Context, node, shape, out_shape) -> None:
    """ONNX maps coordinates with the given scales, TFLite with out / in: they must agree."""
    a = attrs(node)
    if "scales" in a:  # Upsample-7
        scales = np.asarray(a["scales"], np.float32)
    else:
        # Upsample-9 and Resize-10 take (X, scales); Resize-11+ (X, roi, scales, sizes).
        name = node.input[1] if len(node.input) == 2 else (node.input[2] if len(node.input) > 2 else "")
        if not name:
            return
        scales = ctx.require_const(name, node, "scales").reshape(-1)
    axes = [ax % 4 for ax in a.get("axes", range(4))]
    for ax, sc in zip(axes, scales.tolist()):
        if ax >= 2 and not math.isclose(sc, out_shape[ax] / shape[ax], rel_tol=1e-6):
            fail(node, f"scale {sc} does not map axis {ax} size {shape[ax]} exactly onto {out_shape[ax]} "
                       "(TFLite resizes by the size ratio); give sizes or an exact scale")


def _resize_modes(ctx: Context, node, upsampling: bool) -> tuple[str, str, str]:
    """(mode, coordinate_transformation_mode, nearest_mode) with the op version's defaults."""
    a = attrs(node)

    def get(key, default):
        v = a.get(key, default)
        return v.decode() if isinstance(v, bytes) else v

    opset = next((o.version for o in ctx.onnx.opset_import if o.domain in ("", "ai.onnx")), 0)
    if node.op_type == "Upsample" or opset < 11:
        # Upsample and Resize-10 map asymmetrically; onnxruntime floors when upsampling and
        # ceils when downsampling (its "simple" nearest mode).
        return get("mode", "nearest"), "asymmetric", "floor" if upsampling else "ceil"
    return get("mode", "nearest"), get("coordinate_transformation_mode", "half_pixel"), \
        get("nearest_mode", "round_prefer_floor")


@converter("Resize", "Upsample")
def resize(ctx: Context, node):
    a = attrs(node)
    x = node.input[0]
    shape = ctx.shape(x)
    if len(shape) != 4:
        fail(node, "only 4-D (N, C, H, W) resize is supported")
    out_shape = static_shape(ctx, node.output[0], node)
    if out_shape[:2] != shape[:2]:
        fail(node, "resizing the batch or channel axis is not supported")
    _check_resize_scales(ctx, node, shape, out_shape)
    mode, ctm, nearest_mode = _resize_modes(ctx, node, all(out_shape[i] >= shape[i] for i in (2, 3)))
    if a.get("antialias", 0) and (out_shape[2] < shape[2] or out_shape[3] < shape[3]):
        fail(node, "antialiased downsampling is not supported")
    size = ctx.b.const("size", np.asarray(out_shape[2:], np.int32))
    out = ctx.output(node.output[0], out_shape, NHWC)
    xin = ctx.get(x, NHWC)
    if mode == "linear":
        if ctm == "pytorch_half_pixel" and min(out_shape[2:]) > 1:
            ctm = "half_pixel"
        flags = {"half_pixel": (False, True), "align_corners": (True, False), "asymmetric": (False, False)}
        if ctm not in flags:
            fail(node, f"linear resize with coordinate_transformation_mode '{ctm}' is not supported")
        ac, hp = flags[ctm]
        ctx.b.op(BOP.RESIZE_BILINEAR, [xin, size], [out],
                 *options("ResizeBilinearOptions", alignCorners=ac, halfPixelCenters=hp))
    elif mode == "nearest":
        flags = _nearest_flags(ctm, nearest_mode, shape[2:], out_shape[2:])
        if flags is None:
            fail(node, f"nearest resize with coordinate_transformation_mode '{ctm}' and nearest_mode '{nearest_mode}' "
                       f"from {list(shape[2:])} to {list(out_shape[2:])} is not supported")
        ctx.b.op(BOP.RESIZE_NEAREST_NEIGHBOR, [xin, size], [out],
                 *options("ResizeNearestNeighborOptions", alignCorners=flags[0], halfPixelCenters=flags[1]))
    else:
        fail(node, f"resize mode '{mode}' is not supported (nearest, linear are)")
