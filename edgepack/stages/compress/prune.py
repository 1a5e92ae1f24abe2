"""Structured (filter) pruning: channels removed from the network, so dense runtimes run fewer MACs.

The graph is Torch-Pruning's dependency graph: it traces the model once and groups every
layer whose channels are coupled — a conv's filters with the next conv's input slices and the
BatchNorm between them, all members of a residual add, the slices of a concatenation, a
depthwise conv with its producer, an SE block's gates, the classifier's inputs — so a channel
is removed from all of them at once and the pruned model stays consistent. The criterion
(see importance.py) only scores; this module only decides how many to cut and where.

Layers whose outputs are model outputs (classifier heads) are never narrowed: their output
width is the task's.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from ...errors import ConfigError, ModelError, one_line
from .importance import Criterion

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# Torch-Pruning 1.6 renamed MetaPruner (1.5) to BasePruner; the constructor is the same.
_BasePruner = getattr(tp.pruner, "BasePruner", None) or tp.pruner.MetaPruner


class _Pruner(_BasePruner):
    """Torch-Pruning's pruner with a truer `round_to`. Torch-Pruning rounds the kept width
    *down* to a multiple, so 50 % of a 24-channel layer with round_to 8 keeps 8 (67 % cut).
    Here it is rounded to the *nearest* multiple (halves up: 12 -> 16), never below one
    multiple nor above the current width; layers already at most `round_to` wide are
    pruned as asked, so no group can lose all channels."""

    def _round_to(self, n_pruned, current_channels, round_to):
        if current_channels <= round_to:
            return min(n_pruned, current_channels - 1)
        keep = current_channels - n_pruned
        keep = min(current_channels, max(round_to, round_to * ((2 * keep + round_to) // (2 * round_to))))
        return current_channels - keep


def resolve_modules(model: nn.Module, names, field: str) -> dict[str, nn.Module]:
    """Module names from the config → modules; unknown names are the user's error."""
    table = dict(model.named_modules())
    out = {}
    for name in names:
        if name not in table or name == "":
            examples = ", ".join(n for n, m in table.items() if isinstance(m, PRUNABLE))[:300]
            raise ConfigError(f"{field}: the model has no module named {name!r} "
                              f"(its conv/linear layers: {examples} ...)")
        out[name] = table[name]
    return out


def output_layers(model: nn.Module, graph) -> list[nn.Module]:
    """Conv/Linear layers from which no other conv/linear layer is reachable: they produce the
    model's outputs, so their output channels are the task's and must stay."""
    result = []
    for module, node in graph.module2node.items():
        if not isinstance(module, PRUNABLE):
            continue
        seen, stack, feeds_layer = set(), list(node.outputs), False
        while stack and not feeds_layer:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if isinstance(n.module, PRUNABLE):
                feeds_layer = True
            stack.extend(n.outputs)
        if not feeds_layer:
            result.append(module)
    return result


def layer_widths(model: nn.Module) -> dict[str, list[int]]:
    """[in, out] channels of every conv/linear layer, by name."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            widths[name] = [m.in_features, m.out_features]
        elif isinstance(m, PRUNABLE):
            widths[name] = [m.in_channels, m.out_channels]
    return widths


def _check_still_runs(model: nn.Module, example: torch.Tensor, shape: tuple) -> None:
    """Torch-Pruning can mis-trace a coupling it does not model (seen: a channel split
    followed by a shuffle) and leave layers whose widths disagree; catch that here."""
    try:
        with torch.no_grad():
            out = model(example)
    except Exception as exc:
        raise ModelError(f"filter pruning: Torch-Pruning left this model inconsistent ({type(exc).__name__}: "
                         f"{one_line(exc, 200)}); "
                         "it mis-traced how channels are coupled. Ignore the layers around the reshape or split "
                         "(compress.prune.ignore), or use a mask granularity (fine, vector, kernel)") from None
    if tuple(out.shape) != shape:
        raise ModelError(f"filter pruning changed the output shape {list(shape)} -> {list(out.shape)}")


def prune_filters(model: nn.Module, example: torch.Tensor, criterion: Criterion, *, ratio: float,
                  per_layer: dict[str, float] | None = None, ignore: list[str] | tuple = (),
                  global_pruning: bool = False, round_to: int = 1, steps: int = 1,
                  before_step: Callable[[nn.Module], None] | None = None,
                  after_step: Callable[[nn.Module, int], None] | None = None) -> dict:
    """Remove `ratio` of the channels of every coupled group of `model`, in place.

    `per_layer` maps module names to their own ratio; `ignore` names modules left as they are.
    With `steps` > 1 the ratio is reached in equal steps; `before_step(model)` runs before each
    (e.g. to fill gradients for Taylor scores), `after_step(model, i)` after each (e.g. to
    fine-tune). Returns what was done: widths before/after per layer and the ignored layers.
    """
    per_layer = per_layer or {}
    ignored = resolve_modules(model, ignore, "compress.prune.ignore")
    overrides = resolve_modules(model, per_layer, "compress.prune.per_layer")
    before = layer_widths(model)
    was_training = model.training
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning warns about unwrapped parameters and more
        with torch.no_grad():
            reference_shape = tuple(model(example).shape)
        try:
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        except Exception as exc:
            raise ModelError(
                f"filter pruning: Torch-Pruning cannot trace which channels are coupled in this model "
                f"({type(exc).__name__}: {one_line(exc, 200)}); reshapes that mix channels, "
                "such as ShuffleNet's channel shuffle, are beyond its dependency graph. Mask granularities "
                "(fine, vector, kernel) and low-rank do not need it") from None
        heads = output_layers(model, graph)
        names = {m: n for n, m in model.named_modules()}
        pruner = _Pruner(
            model, example, importance=criterion, global_pruning=global_pruning, pruning_ratio=ratio,
            pruning_ratio_dict={overrides[n]: r for n, r in per_layer.items()} or None,
            iterative_steps=steps, ignored_layers=list(ignored.values()) + heads, round_to=round_to,
        )
        for i in range(steps):
            if before_step is not None:
                before_step(model)
            pruner.step()
            model.zero_grad(set_to_none=True)
            _check_still_runs(model, example, reference_shape)
            if after_step is not None:
                after_step(model, i)
    model.train(was_training)
    after = layer_widths(model)
    return {
        "ignored": sorted(ignored),
        "output_layers_kept": sorted(names[m] for m in heads),
        "layers": {n: {"before": before[n], "after": after.get(n)} for n in before},
    }
