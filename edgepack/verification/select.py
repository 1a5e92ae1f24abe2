"""Which artifact a target ships by default: the fastest one that passes its gates.

A quantised artifact is not shipped because it is quantised. On some CPUs and models an
int8 file runs slower than the float one (float islands between Q/DQ pairs, ops without
int8 kernels, x86 without VNNI); then the float artifact is the default and the choice says
why, with the numbers.

Latency is the device's when a device run was merged, otherwise this host's: a quantised
artifact's as its ratio to the float artifact's in alternating runs (`head_to_head`, robust
to load changing between two measurements) times the float p50. On a target of
another ISA the host's ranking is only an estimate; the choice says so, and merging a
device result (`edgepack merge`) chooses again on the device's latency.
"""

from __future__ import annotations

from ..manifest.models import DefaultChoice, Manifest, TargetEntry

# A quantised artifact within this fraction of its runtime's float artifact is "not faster":
# the float one is then preferred (same speed, no quantisation error). Host p50 over 50
# runs on a shared 2-core machine was seen to move by up to 3 % between runs.
SAME_SPEED = 0.03

RESEARCH = ("binary", "ternary")


def with_defaults(manifest: Manifest) -> Manifest:
    """A copy of `manifest` with every target's default artifact chosen from its contents."""
    targets = {name: t.model_copy(update={"default": choose_default(t)}) for name, t in manifest.targets.items()}
    return manifest.model_copy(update={"targets": targets})


def choose_default(target: TargetEntry) -> DefaultChoice:
    """The fastest passing artifact of `target`. A quantised artifact that is not faster
    than its runtime's float one is named in `notes`, with the causes the build found
    (`ArtifactEntry.slowdown_causes`)."""
    rows = []
    float_p50 = {a.runtime: (a.metrics.device_latency or a.metrics.latency).p50_ms
                 for a in target.artifacts if a.precision == "float32"}
    for a in target.artifacts:
        lat = a.metrics.device_latency or a.metrics.latency
        p50 = lat.p50_ms
        h = a.metrics.head_to_head
        if a.metrics.device_latency is None and h is not None and a.runtime in float_p50:
            # measured against the float artifact in alternating runs: its ratio, on the float p50's scale
            p50 = float_p50[a.runtime] * h.ratio
        rows.append((a, p50, a.metrics.device_latency is not None))
    device = all(d for *_, d in rows) and bool(rows)
    same_isa = all(a.metrics.host_is_target_isa for a in target.artifacts)
    basis = ("device latency p50" if device else "host latency p50 (this host has the target's ISA)" if same_isa
             else "host latency p50 (this host is not the target's ISA: an estimate until a device result is merged)")
    if not device and any(a.metrics.head_to_head is not None for a in target.artifacts):
        basis += "; a quantised artifact's p50 is the float p50 times its ratio in runs alternating with float"
    floats = {a.runtime: (a, p50) for a, p50, _ in rows if a.precision == "float32"}
    notes = []
    for a, p50, _ in rows:
        f = floats.get(a.runtime)
        if f is None or a.precision == "float32":
            continue
        ratio = p50 / f[1] if f[1] > 0 else float("inf")
        if ratio > 1 - SAME_SPEED:
            why = "; ".join(a.slowdown_causes) or "no cause identified"
            notes.append(f"{a.kind} is not faster than {f[0].kind}: p50 {p50:.3g} ms vs {f[1]:.3g} ms "
                         f"({ratio:.2f}x; faster means by more than {SAME_SPEED:.0%}); cause: {why}")
    # research formats (binary / ternary weights in int8 containers) are measured, never shipped by default
    passing = [(a, _rank(a, p50, floats)) for a, p50, _ in rows if a.metrics.passed and a.precision not in RESEARCH]
    per_runtime: dict[str, str] = {}
    for a, _ in sorted(passing, key=lambda r: r[1]):
        per_runtime.setdefault(a.runtime, a.kind)
    if not passing:
        return DefaultChoice(kind=None, path=None, basis=basis, per_runtime={}, notes=notes,
                             reason="no artifact passes its gates: nothing to ship for this target")
    best, _ = min(passing, key=lambda r: r[1])
    p50 = next(p for a, p, _ in rows if a is best)
    others = sorted(((a, p) for a, p, _ in rows if a is not best), key=lambda r: r[1])
    faster_failing = [f"{a.kind} ({p:.3g} ms) fails {', '.join(v.gate for v in a.metrics.gates if v.passed is False)}"
                      for a, p in others if p < p50 and not a.metrics.passed]
    reason = f"fastest passing artifact: p50 {p50:.3g} ms"
    if others:
        reason += "; then " + ", ".join(f"{a.kind} {p:.3g} ms" for a, p in others[:3])
    if faster_failing:
        reason += "; faster but failing: " + "; ".join(faster_failing)
    return DefaultChoice(kind=best.kind, path=best.path, basis=basis, reason=reason, per_runtime=per_runtime,
                         notes=notes)


def _rank(a, p50: float, floats: dict) -> tuple[float, int]:
    """Sort key: latency, with a quantised artifact that is not clearly faster than its
    runtime's float artifact ranked as that float artifact's speed plus a hair (the float
    one wins the tie: same speed without quantisation error)."""
    f = floats.get(a.runtime)
    if f is not None and a.precision != "float32" and p50 > f[1] * (1 - SAME_SPEED):
        return (max(p50, f[1]), 1)
    return (p50, 0 if a.precision == "float32" else 1)
