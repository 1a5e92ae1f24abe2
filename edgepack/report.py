"""report.md: a human-readable view of a `Manifest`. Every number in it comes from there."""

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


def render_report(manifest) -> str:
    """report.md for a `Manifest`."""
    m = manifest
    host = m.host
    ev = m.data.evaluation
    labelled = ev.labelled
    exact_runs = [d for d in m.device_results if d.device_exact]
    lines = [
        f"# {m.name} {m.version} — {'PASSED' if m.gates_passed else 'FAILED'}",
        "",
        f"Built {m.created_utc} by edgepack {m.tools['edgepack']} (onnxruntime {m.tools.get('onnxruntime')}, "
        f"onnx {m.tools.get('onnx')}). Config hash `{m.config_hash[:16]}`.",
        "",
        f"Source: {m.source.kind} `{m.source.path}`"
        + (f" (sha256 `{m.source.sha256[:16]}…`)" if m.source.sha256 else "") + "; input "
        + ", ".join(f"`{i.name}` {i.shape} {i.dtype} {i.layout}" for i in m.model.inputs)
        + f"; {m.model.parameters:,} parameters.",
        "",
        f"Calibration: {m.data.calibration.samples} samples from `{m.data.calibration.source}`. "
        f"Evaluation: {ev.samples} samples, {ev.note}.",
        "",
        "## Whose numbers these are",
        "",
        f"- **host**: the artifact file run by this machine's runtime ({host.cpu}, {host.arch}, "
        f"ISA {', '.join(host.isa) or 'unknown'}). These are the device's numbers only if the device "
        "runs the same kernels.",
        "- **reference**: the artifact's int8 QDQ graph executed op by op without graph optimisation "
        "(dequantise → float op → requantise): the quantised model's device-independent numerics, "
        "free of any CPU's fused-kernel shortcuts.",
        "- **device-exact**: the device's own runtime build on the device's CPU — "
        + ("; ".join(d.where + (f" ({d.emulation.get('requirements')})" if d.emulation else "") for d in exact_runs)
           or "not measured for this bundle")
        + ". When present, accuracy gates read these numbers. Emulated runs give exact numerics, never latency.",
        "- **latency** is always measured on this host with the profile's threads capped at the host's "
        f"{host.cores} usable cores; for a target of another ISA it is *not* the device's latency and latency gates "
        "are not judged.",
        "",
        "## Float baseline",
        "",
    ]
    b = m.baseline.metrics
    task = m.model.task.name if m.model.task is not None else None
    # agreement of output 0's argmax only means something for a classifier
    argmax = task in (None, "classification")
    lines.append(
        f"`{m.baseline.path}` ({_kb(m.baseline.size_bytes)}): "
        + (f"top-1 {_f(b.top1)} %, top-5 {_f(b.top5)} %" if labelled
           else f"artifacts are compared by their {task} task metrics and per-output SQNR" if not argmax
           else "no labels: artifacts are compared by SQNR and agreement")
        + f" on {b.samples} samples."
    )
    if m.model.graph_rewrites:
        lines += ["", "Rewrites of the cleaned float graph (numerically equivalent; they let int8 fuse): "
                  + "; ".join(m.model.graph_rewrites) + "."]
    lines += _compression_section(m)
    for tname, t in m.targets.items():
        lines += _target_section(tname, t, b, labelled, argmax)
    if m.device_results:
        lines += ["", "## Device runs", ""]
        for d in m.device_results:
            lines.append(f"- {d.merged_utc}: {d.where} — {'passed' if d.passed else 'FAILED'}"
                         + (", device-exact numerics" if d.device_exact else ", numbers not device-exact")
                         + ("" if d.signed else " (unsigned device result)"))
            lines += [f"  - {p.where}: {p.reason}" for p in d.problems]
    if m.failures:
        lines += ["", "## Failures", ""] + [f"- {f.text()}" for f in m.failures]
    lines += ["", "Re-verify this bundle anywhere with `edgepack verify <bundle>` "
              "(or `python -m edgepack.device verify <bundle>` with only numpy and a runtime).", ""]
    return "\n".join(lines)


def _gate_text(v) -> str:
    mark = "✅" if v.passed else ("❌" if v.passed is False else "—")
    bound = "≥" if v.direction == "higher" else "≤"
    return f"{mark} {v.gate} {_f(v.value, 3)} ({bound} {v.threshold})"


def _task_value(v) -> str:
    """A task metric as its gate reads it: percentages to 2 decimals, other numbers (cosines)
    to 4 significant digits, so a 0.9896 is not shown as a passing 0.99."""
    if v.value is None or v.unit == "%":
        return _f(v.value)
    return f"{v.value:.4g}"


def _target_section(tname: str, t, b, labelled: bool, argmax: bool = True) -> list[str]:
    prof = t.profile
    lines = ["", f"## Target `{tname}` — {prof.description}", "",
             f"CPU {prof.cpu.model} ({prof.cpu.arch}), {t.threads} threads; {'PASSED' if t.passed else 'FAILED'}.", ""]
    lines += _default_lines(t.default)
    qs = t.quantization_settings
    if qs:
        lines += [f"int8 settings: QDQ, per-channel={qs['per_channel']}, activations {qs['activation_type']}, "
                  f"weights {qs['weight_type']}, calibration {qs['calibration_method']}, "
                  f"reduce_range={qs['reduce_range']}.", ""]
    head = ("| artifact | size | vs float (file / weights) · vs int8 floor | numerics | "
            + ("top-1 % | drop | " if labelled else "")
            + ("agree % | " if argmax else "argmax agree % (n/a) | ")
            + "SQNR dB | latency p50 / p90 / p99 ms | gates |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for a in t.artifacts:
        mt = a.metrics
        lat, where = (mt.device_latency, "device") if mt.device_latency else (mt.latency, "host")
        lat_s = f"{_f(lat.p50_ms)} / {_f(lat.p90_ms)} / {_f(lat.p99_ms)} ({where}, {lat.threads} thr)"
        gates = "; ".join(_gate_text(v) for v in mt.gates) or "none"
        for i, (kind, nm) in enumerate(mt.numerics.items()):
            agree = _f(nm.top1_agreement) if argmax else "–"
            used = " (gated)" if kind == mt.gate_numerics else ""
            acc = f"{_f(nm.top1)} | {_f(b.top1 - nm.top1 if b.top1 is not None and nm.top1 is not None else None)} | " \
                if labelled else ""
            if i == 0:
                lines.append(f"| `{a.path}` | {_kb(a.size_bytes)} | "
                             f"{_f(a.size_ratio, 3)}× / {_f(a.weight_ratio, 3)}×"
                             f"{_floor_text(a.int8_size_ratio)} | "
                             f"{kind}{used} | {acc}{agree} | {_f(nm.sqnr_db, 1)} | {lat_s} | {gates} |")
            else:
                lines.append(f"| | | | {kind}{used} | {acc}{agree} | {_f(nm.sqnr_db, 1)} | | |")
        gated = mt.numerics[mt.gate_numerics]
        if gated.task:
            shown = ", ".join(f"{k} {_task_value(v)}{(' ' + v.unit) if v.unit else ''} "
                              f"({'↑' if v.direction == 'higher' else '↓'})" for k, v in gated.task.items())
            lines.append("| | | | task | " + ("| | " if labelled else "") + f"{shown} | | | |")
        if len(gated.outputs) > 1:
            shown = "; ".join(f"`{o.name}` {_f(o.sqnr_db, 1)} dB, cos {_f(o.cosine, 4)}" for o in gated.outputs)
            lines.append("| | | | per output | " + ("| | " if labelled else "") + f"{shown} | | | |")
        for f in mt.device_failures:
            lines.append(f"| | | | ❌ on {f.where} | " + ("| | " if labelled else "") + f"{f.reason} | | | |")
    if t.not_produced:
        lines += ["", "Not produced:", ""]
        for n in t.not_produced:
            where = f" (node `{n.node}`, op `{n.op}`)" if n.node else ""
            need = "required: the target fails" if n.required else "not required"
            lines.append(f"- `{n.kind}`{where} — {need}. {n.reason}")
    lines += _search_lines(t.search)
    for a in t.artifacts:
        lines += _diagnosis_lines(a)
    return lines


_DIAGNOSED_NODES = 10


def _search_lines(search) -> list[str]:
    """The accuracy-aware search: every trial with what it changed, its numbers and verdict."""
    if search is None:
        return []
    lines = []
    for run in search.runs:
        trials = [tr for tr in search.trials if _in_run(tr, run, search)]
        shipped = (f"trial {run.chosen} ({trials[run.chosen].name}) is shipped as `{run.kind}`"
                   if run.chosen is not None else f"`{run.kind}` is shipped as built (no trial did better)")
        added = "; added: " + ", ".join(f"`{trials[i].kind}` (trial {i})" for i in run.added) if run.added else ""
        lines += ["", f"### Accuracy search: `{run.kind}`", "",
                  f"`{run.kind}` failed an accuracy or task gate as built. {len(trials) - 1} trials in "
                  f"{_f(run.seconds, 1)} s (budget {int(run.budget['max_trials'])} trials, "
                  f"{_f(run.budget['max_seconds'], 0)} s); stopped: {run.stopped}. {shipped}{added}."
                  + (f" Other number formats first: {run.remedies_first}." if run.remedies_first else ""), "",
                  "| # | artifact | change | why | kept float | gated metrics | failed gates | p50 ms | size |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for tr in trials:
            kept = "; ".join(f"`{k}` ({v})" for k, v in tr.kept_float.items()) or "–"
            numbers = ", ".join(f"{k} {_task_num(v)}" for k, v in tr.metrics.items()) or "–"
            failed = tr.error or ", ".join(tr.failed_gates) or "none"
            lines.append(f"| {tr.index} | {tr.kind} | {tr.name} | {tr.why} | {kept} | {numbers} | {failed} | "
                         f"{_f(tr.latency_p50_ms, 3)} | {_kb(tr.size_bytes) if tr.size_bytes else '–'} |")
    return lines


def _in_run(tr, run, search) -> bool:
    """Trials are stored one run after another; a run's are those from its own index 0 on."""
    starts = [i for i, t in enumerate(search.trials) if t.index == 0]
    k = search.runs.index(run)
    lo = starts[k]
    hi = starts[k + 1] if k + 1 < len(starts) else len(search.trials)
    return lo <= search.trials.index(tr) < hi


def _task_num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _diagnosis_lines(a) -> list[str]:
    """The nodes whose quantisation adds the most error, from the artifact's diagnosis."""
    d = a.diagnosis
    if not d:
        return []
    nodes = d.get("nodes") or []
    head = ["", f"### Per-node diagnosis: `{a.kind}`", "",
            f"{d.get('method', '')} Measured on {d.get('calls')} calibration calls in {_f(d.get('seconds'), 1)} s"
            + (f"; of {d['graph']}" if d.get("graph") else "") + "."]
    if d.get("error"):
        return head + ["", f"Not measured: {d['error']}"]
    skipped = d.get("skipped") or {}
    lines = head + ["", f"The {min(len(nodes), _DIAGNOSED_NODES)} worst of {len(nodes)} quantised nodes"
                    + (f" ({', '.join(f'{v} skipped: {k}' for k, v in skipped.items())})" if skipped else "") + ":",
                    "", "| node | op | SQNR dB | weights only | activations only | in the whole int8 graph |",
                    "|---|---|---|---|---|---|"]
    for n in nodes[:_DIAGNOSED_NODES]:
        lines.append(f"| `{n.get('name')}` | {n.get('op')} | {_f(n.get('sqnr_db'), 1)} | "
                     f"{_f(n.get('weights_sqnr_db'), 1)} | {_f(n.get('activations_sqnr_db'), 1)} | "
                     f"{_f(n.get('cumulative_sqnr_db'), 1)} |")
    return lines


def _bytes(n) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else _kb(n)


def _n(v) -> str:
    """A count in engineering units: 1.23 M, 45.6 k."""
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return str(int(v))


def _times(before, after, better: str, worse: str) -> str:
    """' (2.00× fewer)' when `after` is half of `before`; ' (same)' within 0.5 %."""
    if not before or not after:
        return ""
    r = before / after
    if abs(r - 1) < 0.005:
        return " (same)"
    return f" ({r:.2f}× {better})" if r > 1 else f" ({1 / r:.2f}× {worse})"


def _step_text(c: dict) -> list[str]:
    out = []
    p = c.get("prune")
    if p:
        what = ("of channels (filter pruning: channels removed)" if p["granularity"] == "filter"
                else f"of {p['granularity']}-grained units zeroed (masks)")
        extra = f", kept channels rounded to multiples of {p['round_to']}" if p.get("round_to") else ""
        out.append(f"pruning {p['ratio'] * 100:.0f} % {what}, criterion `{p['criterion']}`, "
                   f"{'global' if p['global'] else 'per-layer'} ranking{extra}, {p['steps']} step(s)")
    lr = c.get("lowrank")
    if lr:
        how = f"energy {lr['energy']}" if lr.get("energy") is not None else f"rank {lr['rank']}"
        out.append(f"low-rank factorisation ({how}): {lr['replaced']} of {len(lr['layers'])} eligible layers replaced")
    d = c.get("distill")
    if d:
        out.append(f"distillation from the unpruned model ({d['mode']}, {d['epochs']} epochs, T = {d['temperature']}, "
                   f"on {d['samples']} samples of {d['data']})")
    return out


def _compression_section(m) -> list[str]:
    """The compression table: float unpruned → float compressed → each artifact, all measured."""
    c = m.compression
    if not c:
        return []
    labelled = c["evaluation"]["labelled"]
    un, co = c["float_unpruned"], c["float_compressed"]
    before, after = c["before"], c["after"]
    metric = "top-1 %" if labelled else "agreement % with unpruned"
    qv = lambda mt: mt.get("top1") if labelled else mt.get("top1_agreement")  # noqa: E731
    lines = ["", "## Compression", "", "Applied to the PyTorch model before export, in this order: "
             + "; then ".join(_step_text(c)) + ".", ""]
    head = (f"| model | parameters | MACs | file | zlib-compressed | zero weights | latency p50 ms (host) | {metric} |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    base_q = qv(un["metrics"])
    lines.append(f"| float, unpruned | {_n(before['parameters'])} | {_n(before['macs'])} | "
                 f"{_bytes(un['size_bytes'])} | "
                 f"{_bytes(un['zlib_bytes'])} | {_f(100 * before['zero_fraction'], 1)} % | "
                 f"{_f(un['latency_p50_ms'], 3)} ({un['threads']} thr) | {_f(base_q)} |")
    q = qv(co["metrics"])
    lines.append(
        "| float, compressed | "
        f"{_n(after['parameters'])}{_times(before['parameters'], after['parameters'], 'fewer', 'more')} | "
        f"{_n(after['macs'])}{_times(before['macs'], after['macs'], 'fewer', 'more')} | "
        f"{_bytes(co['size_bytes'])}{_times(un['size_bytes'], co['size_bytes'], 'smaller', 'larger')} | "
        f"{_bytes(co['zlib_bytes'])}{_times(un['zlib_bytes'], co['zlib_bytes'], 'smaller', 'larger')} | "
        f"{_f(100 * after['zero_fraction'], 1)} % | "
        f"{_f(co['latency_p50_ms'], 3)} ({co['threads']} thr)"
        f"{_times(un['latency_p50_ms'], co['latency_p50_ms'], 'faster', 'slower')} | "
        f"{_f(q)}" + (f" ({_f(q - base_q)})" if labelled and q is not None else "") + " |")
    for tname, t in m.targets.items():
        for a in t.artifacts:
            mt = a.metrics
            nm = mt.numerics[mt.gate_numerics]
            lat = mt.latency
            if labelled:
                acc = f"{_f(nm.top1)} ({_f(nm.top1 - base_q)}, {mt.gate_numerics})"
            else:  # artifacts are compared with the compressed float model
                acc = f"{_f(nm.top1_agreement)} with compressed ({mt.gate_numerics})"
            lines.append(f"| {tname} `{a.kind}` | as compressed | as compressed | {_bytes(a.size_bytes)} | – | – | "
                         f"{_f(lat.p50_ms, 3)} ({lat.threads} thr) | {acc} |")
    lines += ["", "Parameters and MACs (conv and linear multiply-accumulates) are counted on the PyTorch module; "
              "file sizes are the cleaned float ONNX files; latencies are ONNX Runtime on this host for the float rows "
              f"(median of {len(un['latency_rounds_p50_ms'])} interleaved rounds of "
              f"{un.get('latency_runs_per_round', '?')} runs, "
              "same threads) and each artifact's own runtime for the others; "
              f"accuracy is on the {c['evaluation']['samples']} evaluation samples."]
    p = c.get("prune")
    if p:
        if not p["speeds_up_dense_runtimes"]:
            lines += [""]
            lines.append(f"**{p['granularity'].capitalize()}-grained pruning does not speed up dense runtimes**: "
                         "ONNX Runtime and TFLite multiply zeros like any other weight, and the tensors keep "
                         "their shapes. What it "
                         f"changes is the share of zero weights ({_f(100 * before['zero_fraction'], 1)} % → "
                         f"{_f(100 * after['zero_fraction'], 1)} %) and the compressed size of the file "
                         f"({_bytes(un['zlib_bytes'])} → {_bytes(co['zlib_bytes'])} with zlib), "
                         "which matters for downloads, or for a sparse kernel that this toolchain does not provide.")
        rb = p.get("random_baseline")
        ap = p["after_pruning"]
        name = "top-1" if labelled else "agreement with the unpruned model"
        if rb:
            if p["beats_random"] and ap["value"] > rb["max"]:
                verdict = "**beats random** (every random trial)"
            elif p["beats_random"]:
                verdict = "**beats random on average**, though not every random trial"
            else:
                verdict = "**does NOT beat random**"
            lines.append("")
            lines.append(f"Criterion check, right after pruning (BatchNorm statistics re-estimated, before any "
                         f"fine-tuning), {name} in PyTorch: `{p['criterion']}` "
                         f"{_f(ap['value'])} % vs random importance "
                         f"{_f(rb['value'])} % (mean of {rb['trials']} seeded prunings at the same settings, "
                         f"range {_f(rb['min'])}–{_f(rb['max'])} %): the criterion {verdict}.")
        else:
            lines.append("")
            lines.append(f"The criterion is random importance (the baseline): right after pruning, {name} "
                         f"{_f(ap['value'])} %.")
    lr = c.get("lowrank")
    if lr:
        ranks = ", ".join(f"`{n}` {v['in']}→{v['rank']}→{v['out']}" for n, v in lr["layers"].items() if v["replaced"])
        lines += ["", f"Low-rank: {ranks or 'no layer, since no rank below the threshold saves MACs'}; "
                     f"quality right after: {_f(lr['after_lowrank']['value'])} %."]
    d = c.get("distill")
    if d:
        losses = d["losses"]
        lines += ["", f"Distillation ({d['mode']}): {_f(d['before']['value'])} → {_f(d['after']['value'])} % "
                     f"({'top-1' if labelled else 'agreement'}, PyTorch); "
                     f"loss {_f(losses[0], 4)} → {_f(losses[-1], 4)} "
                     f"over {len(losses)} epochs; BatchNorm statistics re-estimated afterwards"
                     + (f"; features matched at {', '.join(f'`{n}`' for n in d['feature_layers'])}"
                        if d.get("feature_layers") else "") + "."]
    return lines


def _floor_text(ratio: float | None) -> str:
    """An artifact's weight bytes against the model's theoretical int8 size, when measured."""
    return "" if ratio is None else f" · {_f(ratio, 3)}×"


def _default_lines(d) -> list[str]:
    """The artifact the target ships by default, and why (edgepack.verification.select)."""
    if d is None:
        return []
    head = (f"**Default artifact: `{d.path}` ({d.kind})** — {d.reason}; ranked by {d.basis}."
            if d.kind else f"**No default artifact** — {d.reason}.")
    per = ", ".join(f"{rt}: {k}" for rt, k in d.per_runtime.items())
    out = [head + (f" Fastest passing per runtime: {per}." if len(d.per_runtime) > 1 else "")]
    out += [f"- {n}" for n in d.notes]
    return out + [""]
