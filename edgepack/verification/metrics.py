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


def run_all(session, x: np.ndarray, batch: int) -> list[np.ndarray]:
    """Outputs for every full batch of `x`, concatenated per output."""
    per_output: list[list[np.ndarray]] = []
    for i in range(0, len(x) - batch + 1, batch):
        outs = session.run(x[i : i + batch])
        if not per_output:
            per_output = [[] for _ in outs]
        for store, o in zip(per_output, outs):
            store.append(o)
    return [np.concatenate(p) for p in per_output]


def output_metrics(reference: np.ndarray, test: np.ndarray, labels: np.ndarray | None) -> dict:
    """Metrics of one output against the float reference (and labels when given)."""
    m = {
        "samples": int(reference.shape[0]),
        "top1_agreement": top1_agreement(reference, test),
        "sqnr_db": sqnr_db(reference, test),
        "max_abs_error": max_abs_error(reference, test),
    }
    if labels is not None:
        labels = labels[: reference.shape[0]]
        m["top1"] = top_k_accuracy(test, labels, 1)
        m["top5"] = top_k_accuracy(test, labels, 5)
    return m


def measure_latency(session, sample: np.ndarray, warmup: int, runs: int) -> dict:
    """Wall-clock latency of single runs after warm-up, in milliseconds."""
    prepared = session.prepare(sample)  # layout and I/O quantisation are not the model's time
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
