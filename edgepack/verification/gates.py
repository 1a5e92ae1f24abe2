"""Gate verdicts from measured numbers. Plain dicts in and out: the device runner uses it."""

from __future__ import annotations

# Precisions whose weights are 8-bit: the ones the size gates are meant for. Binary and
# ternary weights are stored (and judged) as their int8 containers. "int16x8" is not here:
# its weights are int8 but it is chosen for accuracy over int8, and its biases are wider
# (int64 in TFLite), so an 8-bit size threshold would misjudge it.
EIGHT_BIT = ("int8", "dynamic-int8", "binary", "ternary")


def evaluate_gates(gates: dict, *, metrics: dict, baseline: dict, precision: str,
                   ratios: dict | None, latency: dict | None, latency_is_device: bool) -> list[dict]:
    """One verdict per configured gate: {gate, metric, direction, threshold, value, passed, note}.

    `metric` names the measured quantity and `direction` says which way is better
    ("higher" or "lower"), so a verdict can be read without knowing the gate's name.

    `ratios` holds the artifact's `size_ratio` (file bytes) and `weight_ratio` (constant
    payload bytes, see edgepack.inspection) against the float artifact of the same runtime,
    and `int8_size_ratio`: its constant payload against the model's theoretical int8 size
    (1 byte per weight plus scales, zero points and int32 biases; edgepack.inspection).

    `passed` is None when the gate cannot be judged from these numbers (e.g. a latency
    gate when the latency was not measured on the device's kind of CPU); such a gate is
    reported, not silently dropped, and does not fail the build.
    """
    verdicts = []
    labelled = metrics.get("top1") is not None and baseline.get("top1") is not None
    if gates.get("max_accuracy_drop") is not None and labelled:
        drop = baseline["top1"] - metrics["top1"]
        verdicts.append(_verdict("max_accuracy_drop", "top1_drop", "lower", gates["max_accuracy_drop"], round(drop, 4),
                                 drop <= gates["max_accuracy_drop"], "top-1 points below float"))
    if gates.get("min_sqnr_db") is not None and not labelled:
        v = metrics["sqnr_db"]
        verdicts.append(_verdict("min_sqnr_db", "sqnr_db", "higher", gates["min_sqnr_db"], v, v >= gates["min_sqnr_db"],
                                 "output SQNR vs float (no labels)"))
    ratios = ratios or {}
    for gate, key, note in (("max_int8_size_ratio", "int8_size_ratio",
                             "weight bytes vs the theoretical int8 size (1 B/weight + scales, zero points, biases)"),
                            ("max_weight_ratio", "weight_ratio", "weight bytes vs the float artifact"),
                            ("max_size_ratio", "size_ratio", "file bytes vs the float artifact")):
        value = ratios.get(key)
        if gates.get(gate) is not None and precision in EIGHT_BIT and value is not None:
            verdicts.append(_verdict(gate, key, "lower", gates[gate], round(value, 4), value <= gates[gate], note))
    if gates.get("max_latency_ms") is not None and latency is not None:
        v = latency["p50_ms"]
        if latency_is_device:
            verdicts.append(_verdict("max_latency_ms", "latency_p50_ms", "lower", gates["max_latency_ms"], v,
                                     v <= gates["max_latency_ms"], "p50"))
        else:
            verdicts.append(_verdict("max_latency_ms", "latency_p50_ms", "lower", gates["max_latency_ms"], v, None,
                                     "not judged: latency was not measured on the device's CPU"))
    verdicts += _task_verdicts(gates.get("task") or [], metrics.get("task"))
    return verdicts


def _task_verdicts(task_gates: list[dict], measured: dict | None) -> list[dict]:
    """Gates on the task's metrics (detections matched to float, mask IoU, cosine, ...).
    A metric that is nan (could not be judged, e.g. nothing to compare) fails its gate."""
    out = []
    for g in task_gates:
        name, direction, threshold = g["metric"], g["direction"], g["threshold"]
        m = (measured or {}).get(name)
        if m is None:
            out.append(_verdict(f"task:{name}", name, direction, threshold, None, None,
                                "not judged: the task did not report this metric"))
            continue
        v = m["value"]
        ok = (v >= threshold) if direction == "higher" else (v <= threshold)
        out.append(_verdict(f"task:{name}", name, direction, threshold, v, bool(ok and v == v),
                            m.get("note") or f"task metric ({m.get('unit') or 'value'})"))
    return out


def all_passed(verdicts: list[dict]) -> bool:
    return all(v["passed"] is not False for v in verdicts)


def _verdict(gate, metric, direction, threshold, value, passed, note):
    return {"gate": gate, "metric": metric, "direction": direction, "threshold": threshold, "value": value,
            "passed": passed, "note": note}
