"""Knowledge distillation: the unpruned float model teaches the compressed one.

- weak: only unlabelled inputs are needed. The student matches the teacher's softened
  outputs, KL(softmax(t/T) ‖ softmax(s/T)) · T² (Hinton et al., 2015).
- strong: adds the labels (cross-entropy, weighed 1 − alpha against alpha for the soft
  loss) and intermediate feature matching: at a few layers, the student's feature map goes
  through a trainable 1×1 adapter (its channels were pruned) and is compared with the
  teacher's by mean squared error, relative to the teacher's mean square (FitNets-style).
  The adapters are thrown away afterwards.
Outputs are treated as scores over dimension 1 (classification logits).

BatchNorm statistics are re-estimated on the training inputs afterwards
(`reestimate_batchnorm`): the running averages gathered while weights moved describe no
single set of weights.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, x: np.ndarray, batch: int = 64) -> int:
    """Reset every BatchNorm's running mean/variance to the cumulative statistics of `x`
    (weights untouched); returns how many BatchNorm layers there were. Leaves eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    model.eval()
    for m in bns:
        m.train()
    try:
        for i in range(0, len(x), batch):
            chunk = x[i : i + batch]
            if len(chunk) < 2 and i > 0:
                break  # a lone sample says nothing about variance
            model(torch.from_numpy(np.ascontiguousarray(chunk)))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()
    return len(bns)


def feature_points(teacher: nn.Module, example: torch.Tensor, limit: int = 3) -> list[str]:
    """Module names whose outputs are matched by default: one per spatial resolution, the deepest
    `limit` of them. At each resolution it is the tensor handed to the step down to the next
    one (a stage's output), named by the outermost module that returns it; a resolution
    nothing steps down from (the last) takes the outermost module that finishes last at it."""
    seen = []  # (name, depth, input tensor, input H×W, output tensor, output H×W), in finishing order

    def hook(name, inputs, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() == 4 else None
            seen.append((name, name.count("."), x, None if x is None else tuple(x.shape[2:]),
                         out, tuple(out.shape[2:])))

    handles = [m.register_forward_hook(lambda mod, i, o, n=name: hook(n, i, o))
               for name, m in teacher.named_modules() if name]
    try:
        with torch.no_grad():
            teacher.eval()(example)
    finally:
        for h in handles:
            h.remove()
    resolutions = list(dict.fromkeys(r[5] for r in seen))  # in order of first appearance
    points = []
    for k, hw in enumerate(resolutions):
        nxt = resolutions[k + 1] if k + 1 < len(resolutions) else None
        steps = [r for r in seen if r[3] == hw and r[5] == nxt and r[2] is not None]
        if steps:
            handed = min(steps, key=lambda r: r[1])[2]  # the outermost step down takes the stage output
            producers = [r for r in seen if r[4] is handed]
            if producers:
                points.append(min(producers, key=lambda r: r[1])[0])
                continue
        at = [r for r in seen if r[5] == hw]
        shallowest = min(r[1] for r in at)
        points.append([r for r in at if r[1] == shallowest][-1][0])
    return list(dict.fromkeys(points))[-limit:]


class _Features:
    """Forward hooks that keep copies of named modules' outputs."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.store: dict[str, torch.Tensor] = {}
        mods = dict(model.named_modules())
        # clone: a later in-place op (ReLU(inplace=True)) must not change what was kept
        self._handles = [mods[n].register_forward_hook(lambda m, i, o, n=n: self.store.__setitem__(n, o.clone()))
                         for n in names]

    def close(self):
        for h in self._handles:
            h.remove()


def soft_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    log_p = F.log_softmax(student_out / t, dim=1)
    q = F.softmax(teacher_out / t, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean") * t * t


def distill(student: nn.Module, teacher: nn.Module, x: np.ndarray, y: np.ndarray | None, settings, *,
            seed: int = 0, epochs: int | None = None,
            progress: Callable[[str], Callable[[int, int], None]] | None = None) -> dict:
    """Train `student` toward `teacher` on inputs `x` (labels `y` for strong mode), in place.

    `settings` is a DistillSection (epochs, lr, temperature, alpha, mode, feature_weight,
    feature_layers, batch_size, weight_decay); `epochs` overrides its epoch count (iterative
    pruning spreads them over steps). `progress(description)` returns a callback (done,
    total) for one bar per epoch. Returns the loss per epoch and the matched layers.
    """
    epochs = settings.epochs if epochs is None else epochs
    strong = settings.mode == "strong"
    if strong and y is None:
        raise ValueError("strong distillation needs labels")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    teacher.eval()
    frozen = [(p, p.requires_grad) for p in teacher.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    example = torch.from_numpy(np.ascontiguousarray(x[: min(len(x), 2)]))
    names = []
    if strong and settings.feature_weight > 0:
        names = list(settings.feature_layers) or feature_points(teacher, example)
    t_feats, s_feats = _Features(teacher, names), _Features(student, names)
    adapters = nn.ModuleDict()
    try:
        if names:
            with torch.no_grad():
                student.eval()(example)
                teacher(example)
            for n in names:
                s_c, t_c = s_feats.store[n].shape[1], t_feats.store[n].shape[1]
                adapter = (nn.Conv2d(s_c, t_c, 1, bias=False) if s_feats.store[n].dim() == 4
                           else nn.Linear(s_c, t_c, bias=False))
                if s_c == t_c:
                    nn.init.dirac_(adapter.weight) if adapter.weight.dim() == 4 else nn.init.eye_(adapter.weight)
                adapters[n.replace(".", "/")] = adapter
        params = list(student.parameters()) + list(adapters.parameters())
        opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=settings.lr,
                               weight_decay=settings.weight_decay)
        xt = torch.from_numpy(np.ascontiguousarray(x))
        yt = None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))
        bs = min(settings.batch_size, len(xt))
        n_batches = max(1, len(xt) // bs)  # drop the ragged tail: BatchNorm needs ≥ 2 samples
        total_steps = max(1, epochs * n_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
        losses = []
        for epoch in range(epochs):
            label = (f"distilling ({settings.mode}) epoch {epoch + 1}/{epochs}"
                     + (f", last loss {losses[-1]:.4f}" if losses else ""))
            bar = progress(label) if progress else None
            student.train()
            perm = torch.randperm(len(xt), generator=gen)
            running = 0.0
            for b in range(n_batches):
                idx = perm[b * bs : (b + 1) * bs]
                xb = xt[idx]
                with torch.no_grad():
                    t_out = teacher(xb)
                s_out = student(xb)
                if isinstance(t_out, (tuple, list)):
                    t_out, s_out = t_out[0], s_out[0]
                kd = soft_loss(s_out, t_out, settings.temperature)
                if strong:
                    loss = settings.alpha * kd + (1 - settings.alpha) * F.cross_entropy(s_out, yt[idx])
                    for n in names:
                        t_f = t_feats.store[n]
                        diff = F.mse_loss(adapters[n.replace(".", "/")](s_feats.store[n]), t_f)
                        loss = loss + settings.feature_weight * diff / t_f.pow(2).mean().clamp_min(1e-8)
                else:
                    loss = kd
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.item()
                if bar:
                    bar(b + 1, n_batches)
            losses.append(running / n_batches)
    finally:
        t_feats.close()
        s_feats.close()
        for p, flag in frozen:
            p.requires_grad_(flag)
    student.eval()
    return {"losses": losses, "feature_layers": names, "samples": int(len(x)), "batches_per_epoch": n_batches}
