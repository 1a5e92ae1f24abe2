"""Gate verdicts from measured numbers. Plain dicts in and out: the device runner uses it."""

from __future__ import annotations


def evaluate_gates(gates: dict, *, metrics: dict, baseline: dict, precision: str,
                   size_ratio: float | None, latency: dict | None, latency_is_device: bool) -> list[dict]:
    """One verdict per configured gate: {gate, threshold, value, passed, note}.

    `passed` is None when the gate cannot be judged from these numbers (e.g. a latency
    gate when the latency was not measured on the device's kind of CPU); such a gate is
    reported, not silently dropped, and does not fail the build.
    """
    verdicts = []
    labelled = "top1" in metrics and "top1" in baseline
    if gates.get("max_accuracy_drop") is not None and labelled:
        drop = baseline["top1"] - metrics["top1"]
        verdicts.append(_verdict("max_accuracy_drop", gates["max_accuracy_drop"], round(drop, 4),
                                 drop <= gates["max_accuracy_drop"], "top-1 points below float"))
    if gates.get("min_sqnr_db") is not None and not labelled:
        v = metrics["sqnr_db"]
        verdicts.append(_verdict("min_sqnr_db", gates["min_sqnr_db"], v, v >= gates["min_sqnr_db"],
                                 "output SQNR vs float (no labels)"))
    if gates.get("max_size_ratio") is not None and precision != "float32" and size_ratio is not None:
        verdicts.append(_verdict("max_size_ratio", gates["max_size_ratio"], round(size_ratio, 4),
                                 size_ratio <= gates["max_size_ratio"], "bytes vs the float artifact"))
    if gates.get("max_latency_ms") is not None and latency is not None:
        v = latency["p50_ms"]
        if latency_is_device:
            verdicts.append(_verdict("max_latency_ms", gates["max_latency_ms"], v, v <= gates["max_latency_ms"], "p50"))
        else:
            verdicts.append(_verdict("max_latency_ms", gates["max_latency_ms"], v, None,
                                     "not judged: latency was not measured on the device's CPU"))
    return verdicts


def all_passed(verdicts: list[dict]) -> bool:
    return all(v["passed"] is not False for v in verdicts)


def _verdict(gate, threshold, value, passed, note):
    return {"gate": gate, "threshold": threshold, "value": value, "passed": passed, "note": note}
