"""Low-rank factorisation: a Linear (or 1×1 conv) layer becomes two thinner ones via truncated SVD.

W [out, in] ≈ (U_r √S_r) (√S_r V_rᵀ): the first layer maps `in` → r (no bias, it carries the
stride and padding of a 1×1 conv), the second r → `out` (with the original bias). The rank r
is the smallest holding `energy` of Σ s², or an explicit `rank`. A layer is replaced only
where r · (in + out) < in · out, i.e. where the two layers together run fewer MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from .prune import resolve_modules


def _eligible(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and m.dilation == (1, 1)
            and m.padding_mode == "zeros")


def choose_rank(singular: torch.Tensor, *, energy: float | None, rank: int | None) -> int:
    if rank is not None:
        return min(rank, len(singular))
    share = torch.cumsum(singular.double() ** 2, 0) / (singular.double() ** 2).sum().clamp_min(1e-30)
    return int(min(len(singular), int((share < energy - 1e-12).sum()) + 1))


def _factor(m: nn.Module, r: int) -> nn.Sequential:
    w = m.weight.detach().reshape(m.weight.shape[0], -1).double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:r].sqrt()
    first_w = (root[:, None] * vh[:r]).float()
    second_w = (u[:, :r] * root[None, :]).float()
    if isinstance(m, nn.Linear):
        first = nn.Linear(m.in_features, r, bias=False)
        second = nn.Linear(r, m.out_features, bias=m.bias is not None)
        first.weight.data.copy_(first_w)
        second.weight.data.copy_(second_w)
    else:
        # Padding a 1×1 conv only adds border pixels whose value is the bias: the first
        # (bias-free) layer pads zeros, the second adds the bias there.
        first = nn.Conv2d(m.in_channels, r, 1, stride=m.stride, padding=m.padding, bias=False)
        second = nn.Conv2d(r, m.out_channels, 1, bias=m.bias is not None)
        first.weight.data.copy_(first_w[:, :, None, None])
        second.weight.data.copy_(second_w[:, :, None, None])
    if m.bias is not None:
        second.bias.data.copy_(m.bias.detach())
    return nn.Sequential(first, second).to(m.weight.device)


def factorize(model: nn.Module, *, energy: float | None = None, rank: int | None = None, ignore=()) -> dict:
    """Replace every eligible layer where the factorisation saves MACs, in place.

    Returns per layer: its [in, out], the chosen rank, the share of Σ s² kept, and whether it
    was replaced (and why not)."""
    ignored = resolve_modules(model, ignore, "compress.lowrank.ignore")
    skip = {id(m) for mod in ignored.values() for m in mod.modules()}
    record = {}
    targets = [(n, m) for n, m in model.named_modules() if _eligible(m) and id(m) not in skip]
    for name, m in targets:
        w = m.weight.detach().reshape(m.weight.shape[0], -1).double()
        n_out, n_in = w.shape
        s = torch.linalg.svdvals(w)
        r = choose_rank(s, energy=energy, rank=rank)
        kept = float((s[:r] ** 2).sum() / (s**2).sum().clamp_min(1e-30))
        saves = r * (n_in + n_out) < n_in * n_out
        record[name] = {"in": n_in, "out": n_out, "rank": r, "energy_kept": kept, "replaced": saves,
                        "mac_ratio": r * (n_in + n_out) / (n_in * n_out)}
        if saves:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, _factor(m, r))
    return record
