"""Accuracy-aware search: when an int8 artifact fails an accuracy or task gate, try other
quantisation choices, bounded in trials and time, and keep the first that holds every gate.

The policy lives here; the pipeline supplies `evaluate` (quantise, emit and verify one
candidate in a scratch folder) and `adopt` (write the chosen one into the bundle).

Trials, cheapest first, each applied on top of the best settings found so far (so changes
that help accumulate, "one at a time, then in groups"):
1. percentile calibration (99.99): clips the rare activation outliers that stretch a scale;
2. symmetric activations (ONNX int8 only);
3. the graph's output nodes (heads) kept float: a head that mixes ranges (boxes next to
   scores) loses least that way;
4. the nodes whose quantisation adds the most error kept float: 1, then 3, then 8, ranked by
   the per-node diagnosis (edgepack.verification.diagnosis) of the profile's int8 graph;
5. entropy calibration;
then, when no int8 choice holds, the remedies in other number formats the build can make
(16-bit activations with 8-bit weights, dynamic int8), each added as its own artifact when it
passes. Every trial is recorded with its settings, the nodes kept float and why, its gated
metrics, latency and size.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

# Gates on size: a failure there does not start a search (another quantisation choice is not
# how they are met), but a trial must hold them too (keeping the whole model float is not a
# quantised artifact). Latency is the default-artifact choice's business, not the search's.
SIZE = ("max_size_ratio", "max_weight_ratio", "max_int8_size_ratio")
NOT_ACCURACY = ("max_latency_ms", *SIZE)

# The search's candidate number formats, by the int8 kind they stand in for (16-bit
# activations with 8-bit weights first: closer to int8's speed than dynamic quantisation).
REMEDIES = {"ort-int8": ("ort-int16", "ort-dynamic-int8"),
            "tflite-int8": ("tflite-int16x8", "tflite-dynamic-int8")}

SENSITIVE_GROUPS = (1, 3, 8)


@dataclass(frozen=True)
class Budget:
    max_trials: int
    max_seconds: float


@dataclass
class Candidate:
    name: str
    why: str
    kind: str
    settings: object  # stages.quantize.QuantSettings
    kept_float: dict[str, str] = dataclasses.field(default_factory=dict)


def accuracy_verdicts(entry: dict) -> list[dict]:
    return [v for v in entry["metrics"]["gates"] if v["gate"] not in NOT_ACCURACY]


def fails_accuracy(entry: dict) -> bool:
    """Whether an artifact entry fails a gate on its numbers (not on speed or size)."""
    return any(v["passed"] is False for v in accuracy_verdicts(entry))


def shortfall(entry: dict) -> tuple[float, float]:
    """How far an artifact is from holding its gates, as (size miss, accuracy miss): each the
    sum over its failing gates of the miss relative to the threshold (a gate that could not
    be judged counts 1). (0, 0) holds them all. Tuples compare size first: a trial that keeps
    so much float that it fails a size gate is no longer a quantised artifact, so it never
    ranks above one that holds the size gates, however accurate. Latency is not counted."""
    size = accuracy = 0.0
    for v in entry["metrics"]["gates"]:
        if v["gate"] == "max_latency_ms" or v["passed"] is not False:
            continue
        value, threshold = v["value"], v["threshold"]
        if value is None or value != value:
            miss = 1.0
        else:
            miss = max((threshold - value) if v["direction"] == "higher" else (value - threshold), 0.0)
            miss /= max(abs(threshold), 1e-6)
        if v["gate"] in SIZE:
            size += miss
        else:
            accuracy += miss
    return size, accuracy


def output_nodes(model) -> dict[str, str]:
    """Nodes computing the graph's outputs, with the reason to keep them float."""
    outs = {o.name for o in model.graph.output}
    return {n.name: "computes a model output (head)" for n in model.graph.node if set(n.output) & outs and n.name}


def run_search(first: dict, first_settings, *, kind: str, moves: list, remedies: list[str],
               evaluate: Callable[[Candidate], dict], budget: Budget, progress=None) -> dict:
    """Search from `first` (the built artifact's entry, made with `first_settings`).

    `moves`: (name, why, function settings -> (settings, kept_float) or None) in order;
    `remedies`: other artifact kinds to try when no move holds. Returns the search record:
    {kind, budget, trials, stopped, chosen, chosen_kind, seconds}; `chosen` is the index of the
    trial to ship for `kind` (None: keep the built one), `added` lists remedy trials that pass.
    """
    start = time.perf_counter()
    trials = [_record(0, Candidate("as built", "the profile's quantisation settings", kind, first_settings), first,
                      0.0)]
    best_i, best_settings, best_short = 0, first_settings, shortfall(first)
    stopped, added = "", []
    # the other number formats keep their places in the budget: int8 moves get what is left
    room = budget.max_trials - len(remedies) if budget.max_trials > len(remedies) else budget.max_trials
    plan = [("move", m) for m in moves] + [("remedy", r) for r in remedies]
    seen = {_key(first_settings)}
    last = 0.0
    for step, item in plan:
        if best_short == (0, 0):
            stopped = "the gates hold"
            break
        if len(trials) - 1 >= budget.max_trials:
            stopped = f"budget spent: {budget.max_trials} trials"
            break
        elapsed = time.perf_counter() - start
        if elapsed + last > budget.max_seconds:
            stopped = f"budget spent: {elapsed:.0f} s of {budget.max_seconds:.0f} s (another trial would exceed it)"
            break
        if step == "move":
            if len(trials) - 1 >= room:  # leave the remaining trials to the remedies
                continue
            name, why, fn = item
            made = fn(best_settings)
            if made is None:
                continue
            settings, kept = made
            if _key(settings) in seen:
                continue
            seen.add(_key(settings))
            cand = Candidate(name, why, kind, settings, kept)
        else:
            cand = Candidate(f"{item} instead", f"no int8 choice held the gates: {item} as a remedy", item,
                             best_settings)
        if progress:
            progress(len(trials), len(plan) + 1)
        t0 = time.perf_counter()
        try:
            entry = evaluate(cand)
        except Exception as exc:  # a candidate the quantiser or converter refuses is a finding, not a crash
            from .errors import one_line

            trials.append(_record(len(trials), cand, None, time.perf_counter() - t0,
                                  error=f"{type(exc).__name__}: {one_line(exc)}"))
            continue
        last = time.perf_counter() - t0
        trials.append(_record(len(trials), cand, entry, last))
        s = shortfall(entry)
        if step == "remedy":
            if s == (0, 0):
                added.append(len(trials) - 1)
                stopped = f"the gates hold with {item}"
                break
            continue
        if s < best_short:
            best_i, best_settings, best_short = len(trials) - 1, cand.settings, s
    else:  # the plan ran out without a break
        stopped = "the gates hold" if best_short == (0, 0) else "every candidate tried"
    return {"kind": kind, "budget": dataclasses.asdict(budget), "trials": trials, "stopped": stopped,
            "chosen": best_i if best_i else None, "added": added,
            "seconds": round(time.perf_counter() - start, 1)}


def _key(settings) -> str:
    return settings.key()


def _record(i: int, cand: Candidate, entry: dict | None, seconds: float, error: str | None = None) -> dict:
    """One trial as the manifest keeps it."""
    rec = {"index": i, "name": cand.name, "why": cand.why, "kind": cand.kind,
           "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cand.settings.__dict__.items()},
           "kept_float": dict(cand.kept_float), "seconds": round(seconds, 2), "error": error,
           "passed": None, "failed_gates": [], "metrics": {}, "latency_p50_ms": None, "size_bytes": None}
    if entry is not None:
        mt = entry["metrics"]
        numbers = mt["numerics"][mt["gate_numerics"]]
        metrics = {v["metric"]: v["value"] for v in mt["gates"] if v["value"] is not None}
        for k in ("top1", "sqnr_db", "top1_agreement"):
            if numbers.get(k) is not None:
                metrics.setdefault(k, numbers[k])
        rec.update(passed=shortfall(entry) == (0, 0), metrics=metrics, latency_p50_ms=mt["latency"]["p50_ms"],
                   size_bytes=entry["size_bytes"],
                   failed_gates=[v["gate"] for v in mt["gates"] if v["passed"] is False])
    return rec


def int8_moves(kind: str, float_model, ranked_nodes: list[tuple[str, str, float]]) -> list:
    """The ordered moves for `kind` ("ort-int8" or "tflite-int8"); `ranked_nodes`: the
    diagnosis' (name, op, sqnr_db), most damaging first (ONNX int8 only)."""
    moves = []

    def percentile(s):
        if s.calibration_method == "percentile" and s.percentile <= 99.99:
            return None
        return dataclasses.replace(s, calibration_method="percentile", percentile=99.99), {}

    def entropy(s):
        return (None if s.calibration_method == "entropy"
                else (dataclasses.replace(s, calibration_method="entropy"), {}))

    moves.append(("percentile calibration (99.99)", "clips the rare activation outliers that stretch a scale",
                  percentile))
    if kind == "ort-int8":
        moves.append(("symmetric activations", "a zero point of 0 keeps signed activations centred",
                      lambda s: None if s.symmetric_activations
                      else (dataclasses.replace(s, symmetric_activations=True), {})))
        heads = output_nodes(float_model)
        moves.append(("outputs kept float", "a head that joins values of different ranges loses least in float",
                      _keep(heads)))
        for k in SENSITIVE_GROUPS:
            top = {n: f"{op}: quantising it alone gives {sqnr:.1f} dB SQNR (diagnosis rank {i + 1})"
                   for i, (n, op, sqnr) in enumerate(ranked_nodes[:k])}
            if top:
                moves.append((f"{k} most sensitive node{'s' if k > 1 else ''} kept float",
                              "the nodes whose quantisation adds the most error, by the per-node diagnosis",
                              _keep(top)))
    moves.append(("entropy calibration", "ranges that minimise the KL divergence of each activation's histogram",
                  entropy))
    return moves


def _keep(nodes: dict[str, str]):
    def move(s):
        new = tuple(n for n in nodes if n not in s.keep_float)
        if not new:
            return None
        return dataclasses.replace(s, keep_float=tuple(s.keep_float) + new), {n: nodes[n] for n in new}
    return move
