"""Accuracy-aware search: when an int8 artifact fails an accuracy or task gate, try other
quantisation choices, bounded in trials and time, and keep the first that holds every gate.

The policy lives here; the pipeline supplies `evaluate` (quantise, emit and verify one
candidate in a scratch folder) and `adopt` (write the chosen one into the bundle).

Trials, cheapest first, each applied on top of the best settings found so far (so changes
that help accumulate, "one at a time, then in groups"):
0. (ONNX int8, when the graph has a range-compressing op: Log, Sqrt, fractional Pow,
   Reciprocal, variable divisor) the tensors such an op reads kept float when their
   calibrated range spans many orders of magnitude, weights staying int8; the remedies in
   other number formats below take this change too;
1. percentile calibration (99.99): clips the rare activation outliers that stretch a scale;
2. symmetric activations (ONNX int8 only);
3. the graph's output nodes (heads) kept float: a head that mixes ranges (boxes next to
   scores) loses least that way; then every Concat/Add joining branches whose calibrated
   ranges differ 16x or more kept float (search.mismatched_joins);
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

# The search's candidate number formats, by the int8 kind they stand in for, fastest first:
# dynamic int8 (int8 weights, the MatMul/Conv inputs quantised at run time) before 16-bit
# activations. Measured on this host, p50 against the float artifact: 16x8 runs 1.87x
# (ONNX Runtime has no int16 kernels: DequantizeLinear, float op, QuantizeLinear) and
# 28-31x (LiteRT's 16x8 kernels) on PP-OCR cls and all-MiniLM-L6-v2; dynamic int8 0.39x
# in LiteRT on MiniLM (cosine 0.9988). Dynamic int8 of a model without MatMul-family
# weights is refused by ONNX Runtime's quantiser and costs one short trial.
REMEDIES = {"ort-int8": ("ort-dynamic-int8", "ort-int16"),
            "tflite-int8": ("tflite-dynamic-int8", "tflite-int16x8")}

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


# A Concat/Add whose data inputs' calibrated magnitudes differ by this much puts the smaller
# under a scale 4+ bits too coarse for it (a detector head: boxes 0-1024 next to scores 0-1).
JOIN_RANGE_RATIO = 16.0


def mismatched_joins(model, ranges: dict) -> dict[str, str]:
    """Concat / Sum / two-input Add nodes joining activations whose calibrated max |x| differ
    by JOIN_RANGE_RATIO or more, with the reason to keep them float (the int8 graph would
    give the joined tensor one scale). `ranges`: tensor name -> (min, max)."""
    consts = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                         for o in n.output}
    found = {}
    for n in model.graph.node:
        if n.op_type not in ("Concat", "Add", "Sum") or not n.name:
            continue
        spans = [(i, max(abs(float(ranges[i][0])), abs(float(ranges[i][1]))))
                 for i in n.input if i and i not in consts and i in ranges]
        if len(spans) < 2:
            continue
        (small, lo), (big, hi) = min(spans, key=lambda x: x[1]), max(spans, key=lambda x: x[1])
        if lo > 0 and hi / lo >= JOIN_RANGE_RATIO:
            found[n.name] = (f"{n.op_type} joins `{big}` (max |x| {hi:.3g}) and `{small}` (max |x| {lo:.3g}) "
                             "under one scale")
    return found


def output_nodes(model) -> dict[str, str]:
    """Nodes computing the graph's outputs, with the reason to keep them float."""
    outs = {o.name for o in model.graph.output}
    return {n.name: "computes a model output (head)" for n in model.graph.node if set(n.output) & outs and n.name}


def run_search(first: dict, first_settings, *, kind: str, moves: list, remedies: list[str],
               evaluate: Callable[[Candidate], dict], budget: Budget, progress=None,
               remedies_first: str = "") -> dict:
    """Search from `first` (the built artifact's entry, made with `first_settings`).

    `moves`: (name, why, function settings -> (settings, kept_float) or None) in order;
    `remedies`: other artifact kinds to try when no move holds. Returns the search record:
    {kind, budget, trials, stopped, chosen, chosen_kind, seconds}; `chosen` is the index of the
    trial to ship for `kind` (None: keep the built one), `added` lists remedy trials that pass.
    `remedies_first`: why the remedies go before the int8 moves (none of the moves can reach
    the cause, e.g. LiteRT's quantiser cannot keep a transformer's residual stream float);
    empty: moves first.
    """
    start = time.perf_counter()
    trials = [_record(0, Candidate("as built", "the profile's quantisation settings", kind, first_settings), first,
                      0.0)]
    best_i, best_settings, best_short = 0, first_settings, shortfall(first)
    stopped, added = "", []
    # the other number formats keep their places in the budget: int8 moves get what is left
    room = budget.max_trials - len(remedies) if budget.max_trials > len(remedies) else budget.max_trials
    plan = [("move", m) for m in moves] + [("remedy", r) for r in remedies]
    if remedies_first:
        room = budget.max_trials
        plan = [("remedy", r) for r in remedies] + [("move", m) for m in moves]
    seen = {_key(first_settings)}
    # moves whose change the remedies in other number formats take too (`carry_to_remedies`)
    carried = [m[2] for m in moves if getattr(m[2], "carry_to_remedies", ())]
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
            rsettings, rkept = best_settings, {}
            for carry in carried:  # changes the static QDQ formats need too (e.g. wide-range reads kept float)
                made = carry(rsettings) if item in carry.carry_to_remedies else None
                if made is not None:
                    rsettings, rkept = made[0], {**rkept, **made[1]}
            cand = Candidate(f"{item} instead", f"{remedies_first}: {item} as a remedy" if remedies_first
                             else f"no int8 choice held the gates: {item} as a remedy", item, rsettings, rkept)
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
            "chosen": best_i if best_i else None, "added": added, "remedies_first": remedies_first or None,
            "seconds": round(time.perf_counter() - start, 1)}


def remedies_first(kind: str, float_model) -> str:
    """Why the other number formats go before the int8 moves for `kind`, or "".

    A transformer's full-integer TFLite model loses its accuracy in the residual stream and
    LayerNorms, which LiteRT's quantiser runs in int8 with no way to keep an op float (it
    leaves float only ops it has no int8 kernel for); calibration choices do not reach that.
    Measured on all-MiniLM-L6-v2: full-integer cosine 0.825, dynamic int8 0.9988 at 0.39x
    the float32 p50 (LiteRT, 2 threads, this host)."""
    from .stages import transformer

    if kind == "tflite-int8" and transformer.find(float_model) is not None:
        return ("a transformer: LiteRT's full-integer quantiser runs its residual stream and LayerNorms in int8 "
                "and cannot keep them float")
    return ""


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


def int8_moves(kind: str, float_model, ranked_nodes: list[tuple[str, str, float]], ranges=None) -> list:
    """The ordered moves for `kind` ("ort-int8" or "tflite-int8"); `ranked_nodes`: the
    diagnosis' (name, op, sqnr_db), most damaging first (ONNX int8 only); `ranges`: the
    calibrated (min, max) per tensor, when known (narrows the wide-range move to the reads
    that span many orders of magnitude; without them the quantiser decides from its ranges)."""
    moves = []
    if kind == "ort-int8":
        wide = wide_read_move(float_model, ranges)
        if wide is not None:
            moves.append(wide)

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
        joins = mismatched_joins(float_model, ranges) if ranges else {}
        if joins:
            moves.append(("joins of mismatched ranges kept float",
                          "a Concat/Add whose inputs' calibrated ranges differ by "
                          f"{JOIN_RANGE_RATIO:g}x or more puts them under one scale: the small branch keeps "
                          "few of the 8 bits", _keep(joins)))
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


def wide_read_move(float_model, ranges=None):
    """The move that keeps float the tensors a range-compressing op (Log, Sqrt, fractional or
    negative Pow, Reciprocal, a variable divisor) reads when their calibrated range spans many
    orders of magnitude (stages.quantize.wide_reads), with the chain that feeds them; the
    big MatMul/Conv weights stay int8, so the size gates hold. None when the graph has no
    such op (or, with `ranges`, none reads a wide tensor). The remedies in other number
    formats take it too: 16-bit activations fail the same way (-5 dB measured on a log-mel
    front end whose Log reads [1.3, 2.7e9]; 50.7 dB with this move)."""
    from .stages.quantize import WIDE_READ_SPAN, compressing_reads, wide_reads

    if ranges is not None:
        _, kept = wide_reads(float_model, ranges)
    else:
        kept = {n: f"{op}: its input is kept float if its calibrated magnitudes span more than "
                   f"{WIDE_READ_SPAN:g}x (with the chain feeding it; weights stay int8)"
                for n, (_, op) in compressing_reads(float_model).items()}
    if not kept:
        return None

    def move(s):
        if getattr(s, "float_wide_reads", True):
            return None
        return dataclasses.replace(s, float_wide_reads=True), dict(kept)

    move.carry_to_remedies = ("ort-int16",)  # the static QDQ remedies, made by stages.quantize
    return ("wide-range reads kept float",
            "a Log/Sqrt/Reciprocal/divisor reading a tensor that spans many orders of magnitude expands the "
            "rounding of its small values; that tensor and its chain stay float, weights int8", move)


def _keep(nodes: dict[str, str]):
    def move(s):
        new = tuple(n for n in nodes if n not in s.keep_float)
        if not new:
            return None
        return dataclasses.replace(s, keep_float=tuple(s.keep_float) + new), {n: nodes[n] for n in new}
    return move
