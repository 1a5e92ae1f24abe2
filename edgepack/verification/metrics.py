"""Accuracy, agreement, SQNR and latency statistics. numpy only: runs on devices too."""

from __future__ import annotations

import time

import numpy as np


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Percent of samples whose label is among the k highest scores."""
    scores = logits.reshape(len(labels), -1)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(100.0 * np.mean(np.any(top == labels[:, None], axis=1)))


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Percent of samples where two models pick the same class."""
    n = a.shape[0]
    return float(100.0 * np.mean(a.reshape(n, -1).argmax(1) == b.reshape(n, -1).argmax(1)))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio of `test` against `reference`, in dB (inf if equal)."""
    ref = reference.astype(np.float64)
    noise = np.sum((ref - test.astype(np.float64)) ** 2)
    signal = np.sum(ref**2)
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def max_abs_error(reference: np.ndarray, test: np.ndarray) -> float:
    return float(np.max(np.abs(reference.astype(np.float64) - test.astype(np.float64))))


def run_all(session, calls: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Every model call's outputs, concatenated per output along axis 0 (scalars stacked).

    `calls`: per input name, one entry per model call, `(calls, *input_shape)`."""
    n = n_calls(calls)
    per_output: list[list[np.ndarray]] = []
    for i in range(n):
        outs = session.run({k: v[i] for k, v in calls.items()})
        if not per_output:
            per_output = [[] for _ in outs]
        for store, o in zip(per_output, outs):
            store.append(np.asarray(o))
    return [np.concatenate(p) if p[0].ndim else np.stack(p) for p in per_output]


def n_calls(calls: dict[str, np.ndarray]) -> int:
    return int(len(next(iter(calls.values()))))


def first_call(calls: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in calls.items()}


def output_metrics(reference: np.ndarray, test: np.ndarray, labels: np.ndarray | None) -> dict:
    """Metrics of one output against the float reference (and labels when given)."""
    m = {
        "samples": int(reference.shape[0]),
        "top1_agreement": top1_agreement(reference, test),
        "sqnr_db": sqnr_db(reference, test),
        "max_abs_error": max_abs_error(reference, test),
    }
    n = reference.shape[0]
    if n and reference.reshape(n, -1).shape[1] == 1:
        # one score per sample (a wake-word or voice-activity probability, a logit): an argmax
        # over one class always agrees, so the decision is score > 0.5 for scores in [0, 1],
        # else score > 0, as the classification task judges it
        ref, out = reference.reshape(n), test.reshape(n)
        threshold = 0.5 if ref.min() >= 0 and ref.max() <= 1 else 0.0
        m["top1_agreement"] = float(100.0 * np.mean((ref > threshold) == (out > threshold)))
        if labels is not None:
            m["top1"] = float(100.0 * np.mean((out > threshold).astype(np.int64) == labels[:n].reshape(n)))
            m["top5"] = None
        return m
    if labels is not None:
        labels = labels[: reference.shape[0]]
        m["top1"] = top_k_accuracy(test, labels, 1)
        m["top5"] = top_k_accuracy(test, labels, 5)
    return m


def measure_latency(session, feed, warmup: int, runs: int) -> dict:
    """Wall-clock latency of single runs after warm-up, in milliseconds. `feed`: one model
    call's inputs (a dict by input name, or the array of a single-input model)."""
    prepared = session.prepare(feed)  # layout and I/O quantisation are not the model's time
    for _ in range(warmup):
        session.invoke(prepared)
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        session.invoke(prepared)
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    return {
        "runs": runs,
        "warmup": warmup,
        "threads": session.threads,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def cosine(reference: np.ndarray, test: np.ndarray) -> float:
    """Cosine similarity of two whole outputs (1.0 when both are zero)."""
    a, b = reference.astype(np.float64).ravel(), test.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def stacked(outputs: list[np.ndarray], calls: int) -> list[np.ndarray]:
    """Outputs concatenated over calls (`run_all`) as (calls, *one call's output shape)."""
    return [o.reshape(calls, o.shape[0] // calls, *o.shape[1:]) for o in outputs]


# Tasks whose `measure` reads labels; the others are judged against the float model only.
LABELLED_TASKS = ("classification", "detection", "sequence", "custom")


def class_labels(labels, task):
    """The labels as class indices for top-k accuracy: only without a task or for classification
    (a detection's boxes or a sequence's symbols are the task's to read)."""
    return labels if labels is not None and (task is None or task.name == "classification") else None


def numerics(reference: list[np.ndarray], test: list[np.ndarray], labels: np.ndarray | None, calls: int,
             task=None, output_names: list[str] | None = None) -> dict:
    """Every number of an artifact's outputs against the float reference outputs.

    The classification view of output 0 (agreement, SQNR, accuracy with labels) as before;
    `outputs`: SQNR, cosine and max error of every output on its own; `task`: the task's
    metrics (see tasks.py) when the model has a task."""
    m = output_metrics(reference[0], test[0], class_labels(labels, task))
    names = output_names or [f"output_{i}" for i in range(len(reference))]
    m["outputs"] = [{"name": n, "sqnr_db": sqnr_db(r, t), "cosine": cosine(r, t), "max_abs_error": max_abs_error(r, t)}
                    for n, r, t in zip(names, reference, test)]
    if task is not None:
        task_labels = labels if task.name in LABELLED_TASKS else None
        m["task"] = task.measure(stacked(reference, calls), stacked(test, calls), task_labels)
    return m
