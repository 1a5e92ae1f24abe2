"""Measure a compressed float model against the unpruned one it came from.

Both cleaned float ONNX files are run by ONNX Runtime on the same evaluation data with the
same threads: size, zlib size, latency (interleaved rounds, so background load hits both
alike) and quality against the unpruned model's outputs. The result is the manifest's
`compression` block, together with the compress stage's own torch-side record.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .hostinfo import usable_cores
from .metrics import first_call, measure_latency, output_metrics, run_all
from .runtimes import open_session

LATENCY_ROUNDS = 5
# Each round runs for at least ~0.2 s: a model of 0.2 ms measured 1.47x faster after pruning
# with 3 rounds of 30 runs and 1.59x with 9 rounds of 100.
MIN_ROUND_MS = 200


def measure_compression(record: dict, unpruned_onnx: Path, compressed_onnx: Path, calls, labels, *,
                        threads: int, warmup: int, min_runs: int) -> dict:
    """`record` (the compress stage's measurements) plus both float files measured here."""
    threads = min(threads, usable_cores())
    paths = {"float_unpruned": Path(unpruned_onnx), "float_compressed": Path(compressed_onnx)}
    sessions = {k: open_session(p, threads) for k, p in paths.items()}
    outputs = {k: run_all(s, calls)[0] for k, s in sessions.items()}
    p50s: dict[str, list[float]] = {k: [] for k in paths}
    quick = max(measure_latency(s, first_call(calls), 3, 10)["p50_ms"] for s in sessions.values())
    runs = max(min_runs, min(2000, int(MIN_ROUND_MS / max(quick, 1e-3))))
    for _ in range(LATENCY_ROUNDS):
        for k, s in sessions.items():
            p50s[k].append(measure_latency(s, first_call(calls), warmup, runs)["p50_ms"])
    entry = {**record, "threads": threads}
    for k, p in paths.items():
        data = p.read_bytes()
        entry[k] = {"size_bytes": len(data), "zlib_bytes": len(zlib.compress(data, 9)),
                    "latency_p50_ms": float(np.median(p50s[k])), "latency_rounds_p50_ms": p50s[k],
                    "latency_runs_per_round": runs, "runtime": "onnxruntime", "threads": threads,
                    "metrics": output_metrics(outputs["float_unpruned"], outputs[k], labels)}
    return entry
