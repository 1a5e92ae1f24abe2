"""Pruning criteria: how much each channel (or weight) matters. Swapped by name via CRITERIA.

A criterion answers two questions, one method each:
- `__call__(group)`: one score per channel of a Torch-Pruning dependency group. A group holds
  every layer whose channels are removed together (the conv's filters, the next conv's input
  slices, the BatchNorm entries, residual partners), so a channel's score accounts for all
  the weights that leave with it. Returns None when the group has nothing to score.
- `weights(weight, grad)`: one score per weight, for the mask granularities (fine, vector,
  kernel), which sum it over their units.
Low scores are removed first. `Random` is the baseline every other criterion must beat.
"""

from __future__ import annotations

import abc

import torch
import torch_pruning as tp


class Criterion(abc.ABC):
    name = ""
    # True when scores read `.grad` of the weights: the caller fills gradients first.
    needs_gradients = False

    @abc.abstractmethod
    def __call__(self, group) -> torch.Tensor | None:
        """One score per channel of the group (None: nothing to score)."""

    def weights(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        # Config validation keeps channel-only criteria away from mask granularities.
        raise TypeError(f"criterion {self.name!r} scores channels, not single weights")


class Magnitude(Criterion):
    """Sum of |w|^p over the weights a channel carries: p=1 is L1 (Li et al., 2017), p=2 is
    L2 (Torch-Pruning's default)."""

    p = 1

    def __init__(self, seed: int = 0):
        self._group = tp.importance.GroupMagnitudeImportance(p=self.p, group_reduction="mean", normalizer="mean")

    def __call__(self, group):
        return self._group(group)

    def weights(self, weight, grad):
        return weight.abs().pow(self.p)


class L1(Magnitude):
    name, p = "l1", 1


class L2(Magnitude):
    name, p = "l2", 2


class BNScale(Criterion):
    """|γ| of the BatchNorm after a layer (network slimming, Liu et al., 2017); groups without
    a BatchNorm fall back to L1 so that every group is scored."""

    name = "bn_scale"

    def __init__(self, seed: int = 0):
        self._bn = tp.importance.BNScaleImportance(group_reduction="mean", normalizer="mean")
        self._fallback = L1()

    def __call__(self, group):
        score = self._bn(group)
        return self._fallback(group) if score is None else score


class Taylor(Criterion):
    """First-order Taylor estimate of the loss change, |w · ∂L/∂w| summed over a channel's
    weights (Molchanov et al., 2019). Needs gradients from calibration data."""

    name = "taylor"
    needs_gradients = True

    def __init__(self, seed: int = 0):
        self._group = tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer="mean")

    def __call__(self, group):
        return self._group(group)

    def weights(self, weight, grad):
        if grad is None:
            raise RuntimeError("taylor importance needs gradients; none were computed for this layer")
        return (weight * grad).abs()


class Random(Criterion):
    """Uniform random scores from a seeded generator: the baseline."""

    name = "random"

    def __init__(self, seed: int = 0):
        self._gen = torch.Generator().manual_seed(int(seed))

    def __call__(self, group):
        _, idxs = group[0]
        return torch.rand(len(idxs), generator=self._gen)

    def weights(self, weight, grad):
        return torch.rand(weight.shape, generator=self._gen)


CRITERIA: dict[str, type[Criterion]] = {c.name: c for c in (L1, L2, BNScale, Taylor, Random)}


def make_criterion(name: str, seed: int = 0) -> Criterion:
    return CRITERIA[name](seed=seed)
