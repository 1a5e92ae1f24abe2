"""report.md: a human-readable view of the manifest. Every number in it comes from there."""

from __future__ import annotations

import math


def _f(v, digits=2, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}f}{unit}"


def _kb(n):
    return f"{n / 1024:.1f} KiB"


def render_report(m: dict) -> str:
    host = m["host"]
    ev = m["data"]["evaluation"]
    labelled = ev["labelled"]
    lines = [
        f"# {m['name']} {m['version']} — {'PASSED' if m['gates_passed'] else 'FAILED'}",
        "",
        f"Built {m['created_utc']} by edgepack {m['tools']['edgepack']} (onnxruntime {m['tools']['onnxruntime']}, "
        f"onnx {m['tools']['onnx']}). Config hash `{m['config_hash'][:16]}`.",
        "",
        f"Source: {m['source']['kind']} `{m['source']['path']}`; input "
        + ", ".join(f"`{i['name']}` {i['shape']} {i['dtype']} {i['layout']}" for i in m["model"]["inputs"])
        + f"; {m['model']['parameters']:,} parameters.",
        "",
        f"Calibration: {m['data']['calibration']['samples']} samples from `{m['data']['calibration']['source']}`. "
        f"Evaluation: {ev['samples']} samples, {ev['note']}.",
        "",
        "## Whose numbers these are",
        "",
        f"- **host**: the artifact file run by this machine's runtime ({host['cpu']}, {host['arch']}, "
        f"ISA {', '.join(host['isa']) or 'unknown'}). These are the device's numbers only if the device runs the same kernels.",
        "- **reference**: the artifact's int8 QDQ graph executed op by op without graph optimisation "
        "(dequantise → float op → requantise): the quantised model's device-independent numerics, "
        "free of any CPU's fused-kernel shortcuts.",
        "- **device-exact**: the device's own runtime build on the device's CPU — "
        + ("; ".join(f"{d['where']}" + (f" ({d['emulation'].get('requirements')})" if d.get("emulation") else "")
                     for d in m.get("device_results", [])) or "not measured for this bundle")
        + ". When present, accuracy gates read these numbers. Emulated runs give exact numerics, never latency.",
        "- **latency** is always measured on this host with the profile's threads capped at the host's "
        f"{host['cores']} usable cores; for a target of another ISA it is *not* the device's latency and latency gates are not judged.",
        "",
        "## Float baseline",
        "",
    ]
    b = m["baseline"]["metrics"]
    lines.append(
        f"`{m['baseline']['path']}` ({_kb(m['baseline']['size_bytes'])}): "
        + (f"top-1 {_f(b.get('top1'))} %, top-5 {_f(b.get('top5'))} %" if labelled else "no labels: artifacts are compared by SQNR and agreement")
        + f" on {b['samples']} samples."
    )
    for tname, t in m["targets"].items():
        prof = t["profile"]
        lines += ["", f"## Target `{tname}` — {prof['description']}", "",
                  f"CPU {prof['cpu']['model']} ({prof['cpu']['arch']}), {t['threads']} threads; "
                  f"{'PASSED' if t['passed'] else 'FAILED'}.", ""]
        qs = t.get("quantization_settings")
        if qs:
            lines += [f"int8 settings: QDQ, per-channel={qs['per_channel']}, activations {qs['activation_type']}, "
                      f"weights {qs['weight_type']}, calibration {qs['calibration_method']}, reduce_range={qs['reduce_range']}.", ""]
        head = "| artifact | size | vs float | numerics | " + ("top-1 % | drop | " if labelled else "") + \
               "agree % | SQNR dB | latency p50 / p90 / p99 ms | gates |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for a in t["artifacts"]:
            mt = a["metrics"]
            lat = mt["latency"]
            lat_s = f"{_f(lat['p50_ms'])} / {_f(lat['p90_ms'])} / {_f(lat['p99_ms'])} (host, {lat['threads']} thr)"
            gates = "; ".join(f"{'✅' if v['passed'] else ('❌' if v['passed'] is False else '—')} {v['gate']} {_f(v['value'], 3)}"
                              f" (≤/≥ {v['threshold']})" for v in mt["gates"]) or "none"
            for i, (kind, nm) in enumerate(mt["numerics"].items()):
                used = " (gated)" if kind == mt["gate_numerics"] else ""
                acc = (f"{_f(nm.get('top1'))} | {_f(b['top1'] - nm['top1'])} | " if labelled else "")
                if i == 0:
                    lines.append(f"| `{a['path']}` | {_kb(a['size_bytes'])} | {_f(a['size_ratio'], 3)}× | {kind}{used} | {acc}"
                                 f"{_f(nm['top1_agreement'])} | {_f(nm['sqnr_db'], 1)} | {lat_s} | {gates} |")
                else:
                    lines.append(f"| | | | {kind}{used} | {acc}{_f(nm['top1_agreement'])} | {_f(nm['sqnr_db'], 1)} | | |")
    if m["failures"]:
        lines += ["", "## Failed gates", ""] + [f"- {f}" for f in m["failures"]]
    lines += ["", "Re-verify this bundle anywhere with `edgepack verify <bundle>` "
              "(or `python -m edgepack.device verify <bundle>` with only numpy and a runtime).", ""]
    return "\n".join(lines)
