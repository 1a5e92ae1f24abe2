"""The compress stage: a PyTorch model made smaller before export, with its effects measured.

`compress(module, config, reporter, data=...)` applies the `[compress]` section in a fixed
order — prune (filter, fine, vector or kernel granularity), low-rank factorisation, then
distillation from the unpruned model — and returns the compressed module together with a
JSON-serialisable record of what changed: parameters, MACs, zero fraction, and quality on
the evaluation data (top-1 with labels, else agreement and SQNR against the unpruned model)
after each step. For pruning the record also holds the same measurement for random
importance at the same settings, so the chosen criterion's claim is checked against the
baseline it must beat.

Only this package (with load and export) imports torch; the pipeline imports it lazily.
The parts are kept apart: importance.py scores, prune.py / sparsity.py cut, lowrank.py
factorises, distill.py trains, measure.py counts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, EdgepackError, ModelError, one_line
from ...progress import Reporter
from .distill import distill, reestimate_batchnorm
from .importance import CRITERIA, Criterion, Random, make_criterion
from .lowrank import factorize
from .measure import count_macs, count_params, predict, quality, zero_fraction
from .prune import prune_filters
from .sparsity import apply_masks, make_permanent

__all__ = ["CRITERIA", "CompressionData", "CompressionResult", "compress"]


@dataclass
class CompressionData:
    """What the stage trains, calibrates and judges with (numpy, model layout)."""

    input_shape: tuple[int, ...]
    calibration_x: np.ndarray
    calibration_y: np.ndarray | None
    eval_x: np.ndarray
    eval_y: np.ndarray | None
    train_x: np.ndarray | None = None  # distillation data; default: the calibration data
    train_y: np.ndarray | None = None
    train_source: str = "calibration data"
    round_to: int = 1  # default channel multiple (the first target's), unless the config sets one


@dataclass
class CompressionResult:
    module: nn.Module
    record: dict


def compress(module: nn.Module, config, reporter=None, *, data: CompressionData) -> CompressionResult:
    """Compress a copy of `module` as `config` (a CompressSection) says; `module` is left as it
    is (it is the teacher). Raises ConfigError for settings the model or data cannot meet."""
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _compress(module, config, reporter or Reporter(), data)
    finally:
        torch.set_num_threads(previous)


def _compress(module: nn.Module, config, rep, data: CompressionData) -> CompressionResult:
    torch.manual_seed(config.seed)
    teacher = module.eval()
    train_x = data.calibration_x if data.train_x is None else data.train_x
    train_y = data.calibration_y if data.train_x is None else data.train_y
    dcfg = config.distill
    if dcfg is not None and dcfg.mode == "strong" and train_y is None:
        raise ConfigError(f"compress.distill.mode: 'strong' needs labelled training data; {data.train_source} "
                          "has no labels (give labelled compress.distill.data, or use mode = 'weak')")
    if dcfg is not None and dcfg.samples is not None:
        train_x = train_x[: dcfg.samples]
        train_y = None if train_y is None else train_y[: dcfg.samples]
    reference = predict(teacher, data.eval_x)
    judge = lambda m: quality(predict(m, data.eval_x), reference, data.eval_y)  # noqa: E731

    record: dict = {
        "order": [],
        "input_shape": list(data.input_shape),
        "measured_on": "torch fp32, evaluation data",
        "evaluation": {"samples": int(len(data.eval_x)), "labelled": data.eval_y is not None,
                       "metric": "top1" if data.eval_y is not None else "top1_agreement"},
        "before": {**_size(teacher, data.input_shape), "quality": judge(teacher)},
    }
    student = copy.deepcopy(teacher)
    epochs_left = dcfg.epochs if dcfg is not None else 0
    try:
        if config.prune is not None:
            p = config.prune
            record["order"].append("prune")
            between = None
            if dcfg is not None and p.steps > 1:
                per_step = dcfg.epochs // p.steps
                epochs_left -= per_step * (p.steps - 1)

                def between(model, step):
                    if step < p.steps - 1 and per_step > 0:
                        distill(model, teacher, train_x, train_y, dcfg, seed=config.seed + step, epochs=per_step,
                                progress=rep.track)
                        reestimate_batchnorm(model, train_x)
            round_to = p.round_to or data.round_to
            what = "channels" if p.granularity == "filter" else f"{p.granularity}-grained units"
            with rep.stage(f"pruning {p.ratio:.0%} of {what} ({p.criterion})"):
                chosen = make_criterion(p.criterion, config.seed)
                details = _prune(student, p, chosen, data, teacher, round_to, between)
                after_prune = judge(student)
                if between is not None:  # judged after fine-tuning between steps: re-prune without it, fairly
                    plain = copy.deepcopy(teacher)
                    _prune(plain, p, make_criterion(p.criterion, config.seed), data, teacher, round_to, None)
                    after_prune = judge(plain)
            random_runs = []
            if p.criterion != "random":
                with rep.stage(f"random-importance baseline ({p.random_trials} prunings at the same ratio)") as tick:
                    for t in range(p.random_trials):
                        baseline = copy.deepcopy(teacher)
                        _prune(baseline, p, Random(seed=config.seed + 1000 + t), data, teacher, round_to, None)
                        random_runs.append(judge(baseline))
                        del baseline
                        tick(t + 1, p.random_trials)
            record["prune"] = {
                "granularity": p.granularity,
                "criterion": p.criterion,
                "ratio": p.ratio,
                "global": p.global_pruning,
                "per_layer": dict(p.per_layer),
                "round_to": round_to if p.granularity == "filter" else None,
                "steps": p.steps,
                "batchnorm_reestimated": p.recalibrate_bn,
                "speeds_up_dense_runtimes": p.granularity == "filter",
                **details,
                "after_pruning": after_prune,
                "random_baseline": _summarise(random_runs),
                "beats_random": (None if not random_runs
                                 else after_prune["value"] > _summarise(random_runs)["value"]),
            }
        if config.lowrank is not None:
            lr = config.lowrank
            record["order"].append("lowrank")
            with rep.stage("low-rank factorisation (truncated SVD)"):
                layers = factorize(student, energy=lr.energy, rank=lr.rank, ignore=lr.ignore)
            record["lowrank"] = {"energy": lr.energy, "rank": lr.rank, "layers": layers,
                                 "replaced": sum(1 for v in layers.values() if v["replaced"]),
                                 "after_lowrank": judge(student)}
        if dcfg is not None:
            record["order"].append("distill")
            before = judge(student)
            with rep.stage(f"distilling from the unpruned model ({dcfg.mode}, {max(epochs_left, 1)} epochs)"):
                result = distill(student, teacher, train_x, train_y, dcfg, seed=config.seed,
                                 epochs=max(epochs_left, 1), progress=rep.track)
                reestimate_batchnorm(student, train_x)
            record["distill"] = {
                "mode": dcfg.mode, "epochs": dcfg.epochs, "lr": dcfg.lr, "temperature": dcfg.temperature,
                "alpha": dcfg.alpha if dcfg.mode == "strong" else None,
                "feature_weight": dcfg.feature_weight if dcfg.mode == "strong" else None,
                "data": data.train_source, "labelled": train_y is not None,
                **result, "batchnorm_reestimated": True,
                "before": before, "after": judge(student),
            }
    except EdgepackError:
        raise
    except Exception as exc:  # a model Torch-Pruning cannot trace, a layer SVD cannot handle, ...
        raise ModelError(f"compression failed ({'/'.join(record['order']) or 'setup'}): "
                         f"{type(exc).__name__}: {one_line(exc)}") from None
    make_permanent(student)
    student.eval()
    out = predict(student, data.eval_x[:1])
    if out.shape[1:] != reference.shape[1:]:
        raise ModelError(f"compression changed the output shape {list(reference.shape[1:])} -> {list(out.shape[1:])}")
    record["after"] = {**_size(student, data.input_shape), "quality": judge(student)}
    b, a = record["before"], record["after"]
    record["ratios"] = {k: (b[k] / a[k] if a[k] else None) for k in ("parameters", "macs")}
    return CompressionResult(module=student, record=record)


def _size(model: nn.Module, input_shape) -> dict:
    return {"parameters": count_params(model), "macs": count_macs(model, tuple(input_shape)),
            "zero_fraction": zero_fraction(model)}


def _summarise(runs: list[dict]) -> dict | None:
    if not runs:
        return None
    values = [r["value"] for r in runs]
    return {"trials": len(runs), "value": float(np.mean(values)), "min": float(min(values)),
            "max": float(max(values)), "runs": runs}


def _prune(model: nn.Module, p, criterion: Criterion, data: CompressionData, teacher: nn.Module, round_to: int,
           between) -> dict:
    """One pruning of `model` in place with `criterion`: filter or masks, in `p.steps` steps,
    BatchNorm re-estimated after each when configured."""
    example = torch.zeros(*data.input_shape)

    def before_step(m):
        if criterion.needs_gradients:
            _fill_gradients(m, teacher, data.calibration_x[: p.importance_samples],
                            None if data.calibration_y is None else data.calibration_y[: p.importance_samples])

    def after_step(m, i):
        if p.recalibrate_bn:
            reestimate_batchnorm(m, data.calibration_x)
        if between is not None:
            between(m, i)

    if p.granularity == "filter":
        return prune_filters(model, example, criterion, ratio=p.ratio, per_layer=p.per_layer, ignore=p.ignore,
                             global_pruning=p.global_pruning, round_to=round_to, steps=p.steps,
                             before_step=before_step, after_step=after_step)
    layers = {}
    for i in range(p.steps):
        before_step(model)
        scale = (i + 1) / p.steps
        layers = apply_masks(model, criterion, p.granularity, ratio=p.ratio * scale,
                             per_layer={k: v * scale for k, v in p.per_layer.items()}, ignore=p.ignore,
                             global_pruning=p.global_pruning)
        model.zero_grad(set_to_none=True)
        after_step(model, i)
    return {"ignored": sorted(p.ignore), "layers": layers}


def _fill_gradients(model: nn.Module, teacher: nn.Module, x: np.ndarray, y: np.ndarray | None, batch: int = 64):
    """∂L/∂w accumulated over `x` (cross-entropy against the labels, or against the unpruned
    model's predictions when there are none), for gradient-based criteria."""
    model.eval()
    model.zero_grad(set_to_none=True)
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))
        if y is not None:
            target = torch.from_numpy(np.asarray(y[i : i + batch], dtype=np.int64))
        else:
            with torch.no_grad():
                target = teacher(xb).argmax(1)
        loss = F.cross_entropy(model(xb), target, reduction="sum") / len(x)
        loss.backward()
