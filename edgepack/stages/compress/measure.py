"""What compression changed, measured on the torch module: parameters, MACs, zeros, outputs.

MACs follow the usual convention: multiply-accumulates of convolutions and Linear layers
(output elements × input channels per group × kernel area; output elements × in_features);
BatchNorm, activations, pooling and adds are not counted.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...verification.metrics import sqnr_db, top1_agreement, top_k_accuracy

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of `input_shape` (its whole batch)."""
    total = 0

    def conv(m, _inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * int(np.prod(m.kernel_size))

    def linear(m, _inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    handles = [m.register_forward_hook(linear if isinstance(m, nn.Linear) else conv)
               for m in model.modules() if isinstance(m, WEIGHTED)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


def weight_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The effective weight of every conv and Linear layer, by module name."""
    return {name: m.weight.detach() for name, m in model.named_modules() if isinstance(m, WEIGHTED)}


def zero_fraction(model: nn.Module) -> float:
    """Share of exactly-zero values among all conv and Linear weights."""
    ws = list(weight_tensors(model).values())
    total = sum(w.numel() for w in ws)
    return float(sum(int((w == 0).sum()) for w in ws) / total) if total else 0.0


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The model's first output for every sample of `x`, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        outs = []
        for i in range(0, len(x), batch):
            out = model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch])))
            if isinstance(out, (tuple, list)):
                out = out[0]
            outs.append(out.float().numpy())
        return np.concatenate(outs)
    finally:
        model.train(was_training)


def quality(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> dict:
    """Outputs judged against the unpruned model's (`reference`) and, when given, the labels.

    `value` is the headline number: top-1 % with labels, else top-1 agreement % with the
    unpruned model."""
    q = {"top1_agreement": top1_agreement(reference, outputs), "sqnr_db": sqnr_db(reference, outputs)}
    if labels is not None:
        q["top1"] = top_k_accuracy(outputs.reshape(len(labels), -1), labels, 1)
    q["value"] = q["top1"] if labels is not None else q["top1_agreement"]
    return q
