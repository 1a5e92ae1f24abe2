"""Mask granularities: zeros inside weight tensors, at the grain of a single weight, a kernel row, or
a whole kernel (Mao et al., 2017, "Exploring the granularity of sparsity in CNNs").

For a conv weight [out, in, kh, kw] the unit removed together is
- fine:   one weight                    (1 × 1 × 1 × 1)
- vector: one row of a kernel           (1 × 1 × 1 × kw)
- kernel: one whole kh × kw kernel      (1 × 1 × kh × kw)
A Linear weight [out, in] is treated as [out, in, 1, 1], so its units are single weights.

Masks are held by `torch.nn.utils.prune` while the model is fine-tuned (the masked weights
stay zero through distillation) and are made permanent by `make_permanent` before export.
The tensors keep their shape: dense runtimes (ONNX Runtime, TFLite) execute every
multiply-accumulate of a zero as of any other value, so these granularities change the zero
fraction and the compressed file size, not latency. Filter pruning (prune.py) is what
shrinks the computation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .importance import Criterion
from .prune import PRUNABLE, resolve_modules

GRANULARITIES = ("fine", "vector", "kernel")


def _as_4d(w: torch.Tensor) -> torch.Tensor:
    """View any conv/linear weight as [out, in, kh, kw] (1-D convs get kh = 1; 3-D convs fold depth into kh)."""
    if w.dim() == 2:
        return w[:, :, None, None]
    if w.dim() == 3:
        return w[:, :, None, :]
    if w.dim() == 5:
        return w.reshape(w.shape[0], w.shape[1], w.shape[2] * w.shape[3], w.shape[4])
    return w


def unit_scores(scores: torch.Tensor, granularity: str) -> torch.Tensor:
    """Per-weight scores summed over the granularity's units, shaped [out, in, rows, cols]
    broadcastable back to the 4-D weight view."""
    s = _as_4d(scores)
    if granularity == "fine":
        return s
    if granularity == "vector":
        return s.sum(dim=3, keepdim=True)
    if granularity == "kernel":
        return s.sum(dim=(2, 3), keepdim=True)
    raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")


def _mask_lowest(scores: torch.Tensor, ratio: float, threshold: float | None = None) -> torch.Tensor:
    """1 for units kept, 0 for the `ratio` share with the lowest scores (or those ≤ threshold)."""
    flat = scores.flatten()
    if threshold is None:
        n = int(round(ratio * flat.numel()))
        if n <= 0:
            return torch.ones_like(scores)
        order = torch.argsort(flat, stable=True)
        mask = torch.ones_like(flat)
        mask[order[:n]] = 0
        return mask.view_as(scores)
    return (scores > threshold).to(scores.dtype)


def layers_to_mask(model: nn.Module, ignore=()) -> dict[str, nn.Module]:
    ignored = resolve_modules(model, ignore, "compress.prune.ignore")
    skip = {id(m) for mod in ignored.values() for m in mod.modules()}
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE) and id(m) not in skip}


def apply_masks(model: nn.Module, criterion: Criterion, granularity: str, *, ratio: float,
                per_layer: dict[str, float] | None = None, ignore=(), global_pruning: bool = False) -> dict:
    """Zero the lowest-scoring units of every conv/linear weight (keeping earlier masks), in place.

    Local: each layer loses `ratio` (or its `per_layer` ratio) of its units. Global: one score
    threshold for all layers without a per-layer ratio, so the network as a whole loses `ratio`.
    Returns each layer's unit shape and zero fraction. Masks stay attached (weights are
    `weight_orig * weight_mask`) until `make_permanent`.
    """
    per_layer = per_layer or {}
    overrides = resolve_modules(model, per_layer, "compress.prune.per_layer")
    layers = layers_to_mask(model, ignore)

    def own_ratio(name):
        for parent in overrides:  # a per-layer entry may name a container
            if name == parent or name.startswith(parent + "."):
                return per_layer[parent]
        return None

    units = {}
    for name, m in layers.items():
        grad = getattr(m, "weight_orig", m.weight).grad  # with a mask attached, the leaf is weight_orig
        s = unit_scores(criterion.weights(m.weight.detach(), None if grad is None else grad.detach()), granularity)
        old = getattr(m, "weight_mask", None)
        if old is not None:  # earlier steps' zeros stay zeros: they rank first
            s = torch.where(unit_scores(old, granularity) > 0, s, torch.full_like(s, -1.0))
        units[name] = s
    threshold = None
    if global_pruning:
        pooled = torch.cat([units[n].flatten() for n in layers if own_ratio(n) is None] or [torch.zeros(0)])
        k = int(round(ratio * pooled.numel()))
        threshold = float(torch.kthvalue(pooled, k).values) if k > 0 else float("-inf")
    record = {}
    for name, m in layers.items():
        r = own_ratio(name)
        unit_mask = _mask_lowest(units[name], ratio if r is None else r, threshold if r is None else None)
        view = _as_4d(m.weight)
        mask = unit_mask.expand_as(view).reshape(m.weight.shape).contiguous()
        unit = [view.shape[2] // unit_mask.shape[2], view.shape[3] // unit_mask.shape[3]]
        if hasattr(m, "weight_mask"):
            mask = mask * m.weight_mask
            torch_prune.remove(m, "weight")
        torch_prune.custom_from_mask(m, "weight", mask)
        record[name] = {"unit": unit, "zero_fraction": float((mask == 0).float().mean())}
    return record


def make_permanent(model: nn.Module) -> int:
    """Fold every attached mask into its weight (weights become exact zeros); returns how many."""
    n = 0
    for m in model.modules():
        if torch_prune.is_pruned(m) and hasattr(m, "weight_mask"):
            torch_prune.remove(m, "weight")
            n += 1
    return n
