"""report.html: a self-contained page (tables and interactive charts) rendered from a `Manifest`.

Every number in it comes from the manifest, like report.md's. The page needs no network: the
plotting library (plotly.js) is embedded once, inline, and each chart is one `Plotly.newPlot`
call on JSON built here. Every string taken from the manifest (model, tensor, node and file
names come from untrusted files) is escaped, both in the HTML and in the chart JSON.

plotly is imported inside `render_html` only, so importing this module costs nothing.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .report import _f, _task_value

# The colours of targets (plotly's default qualitative palette) and the marker symbol of
# each artifact kind in the charts.
_COLOURS = ["#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880",
            "#FF97FF", "#FECB52"]
_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "cross", "star", "hexagon", "pentagon",
            "triangle-down", "x"]
_WORST_NODES = 20

_CSS = """
:root { --pass: #1a7f37; --fail: #cf222e; --na: #6e7781; --line: #d0d7de; --muted: #57606a; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0 auto; max-width: 1320px; padding: 16px 24px 48px; color: #1f2328; }
h1 { font-size: 24px; margin: 8px 0 4px; } h2 { font-size: 19px; margin: 28px 0 6px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 12px; color: #fff; font-size: 15px;
         vertical-align: middle; }
.badge.pass { background: var(--pass); color: #fff; } .badge.fail { background: var(--fail); color: #fff; }
.meta, .muted, figcaption { color: var(--muted); }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f6f8fa;
       padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 6px 0 10px; } table.artifacts { width: 100%; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; } td.num { text-align: right; white-space: nowrap; }
ul.gates { list-style: none; margin: 0; padding: 0; } ul.gates li { margin-bottom: 2px; }
td.artifact { min-width: 150px; } td.artifact code { font-size: 11.5px; }
.pass { color: var(--pass); } .fail { color: var(--fail); } .na { color: var(--na); }
.sub { font-size: 12px; color: var(--muted); }
ul.failures li { color: var(--fail); }
dl.legend dt { font-weight: 600; margin-top: 4px; } dl.legend dd { margin: 0 0 2px 18px; }
figure { margin: 18px 0 26px; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
figcaption { font-size: 13px; margin-top: 4px; } .plot { width: 100%; min-height: 200px; }
.plot-error { color: var(--fail); font-weight: 600; }
"""

# Draws every chart; a chart that cannot be drawn says so in its place, and so does any
# script error, so a broken page is visible (and testable) rather than silently empty.
_DRAW = """
(function () {
  function fail(div, what) {
    var p = document.createElement('p');
    p.className = 'plot-error';
    p.textContent = 'This chart could not be drawn: ' + what;
    div.appendChild(p);
  }
  window.addEventListener('error', function (e) {
    var p = document.createElement('p');
    p.className = 'plot-error';
    p.textContent = 'Script error: ' + e.message;
    document.body.appendChild(p);
  });
  var config = {displaylogo: false, responsive: true, showLink: false, showSendToCloud: false};
  Object.keys(EDGEPACK_FIGURES).forEach(function (id) {
    var div = document.getElementById(id), fig = EDGEPACK_FIGURES[id];
    try {
      if (typeof Plotly === 'undefined') { throw new Error('plotly.js is not loaded'); }
      Plotly.newPlot(div, fig.data, fig.layout, config).then(
        function () { div.setAttribute('data-rendered', 'true'); },
        function (err) { fail(div, String(err)); });
    } catch (err) { fail(div, String(err)); }
  });
})();
"""


def _e(v) -> str:
    """Text from the manifest, escaped for HTML."""
    return html.escape("" if v is None else str(v), quote=True)


def _pe(v) -> str:
    """Text from the manifest for a chart label or hover text: plotly reads a few HTML tags in
    them (<b>, <br>, <a>), so <, > and & become the entities it shows as themselves."""
    return html.escape("" if v is None else str(v), quote=False)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _get(obj, *names, default=None):
    """The first of `names` that `obj` has, as an attribute or a mapping key: for fields the
    manifest may gain later (search trials, per-node diagnosis), whose exact shape is open."""
    if obj is None:
        return default
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if v is not None:
            return v
    return default


def _extra(model, name):
    """A field a pydantic model may gain later (or hold as an extra), None while it has none."""
    v = getattr(model, name, None)
    if v is None:
        v = (getattr(model, "model_extra", None) or {}).get(name)
    return v


# ---------------------------------------------------------------------------------------
# Which quality number the charts and the headline column show


@dataclass
class _Quality:
    key: str  # "top1", "sqnr_db", or a task metric's name
    label: str
    unit: str
    higher_is_better: bool = True
    task: bool = False
    why: str = ""

    def of(self, nm) -> float | None:
        """This quality number of one `Numerics` (None when it was not measured)."""
        if nm is None:
            return None
        if self.task:
            tm = (nm.task or {}).get(self.key)
            return None if tm is None else tm.value
        return getattr(nm, self.key, None)

    @property
    def axis(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


def _quality(m) -> _Quality:
    """top-1 % on labelled data for a classifier; else the first gated task metric; else SQNR
    (the choice the CLI summary makes)."""
    task = m.model.task.name if m.model.task is not None else None
    labelled = m.data.evaluation.labelled
    if labelled and task in (None, "classification"):
        return _Quality("top1", "top-1 accuracy", "%", why="top-1 accuracy on the labelled evaluation data")
    gate = next((g for t in m.targets.values() for g in t.gates.task), None)
    if gate is not None:
        unit = next((nm.task[gate.metric].unit for t in m.targets.values() for a in t.artifacts
                     for nm in a.metrics.numerics.values() if gate.metric in (nm.task or {})), "")
        return _Quality(gate.metric, gate.metric.replace("_", " "), unit, gate.direction == "higher", task=True,
                        why=f"the {task} task's first gated metric, {gate.metric} "
                            f"({'higher' if gate.direction == 'higher' else 'lower'} is better)")
    if labelled:
        return _Quality("top1", "top-1 accuracy", "%", why="top-1 accuracy on the labelled evaluation data")
    return _Quality("sqnr_db", "SQNR vs float", "dB",
                    why="signal-to-quantisation-noise ratio of the outputs against the float model's outputs")


# ---------------------------------------------------------------------------------------
# Page


def render_html(manifest) -> str:
    """report.html for a `Manifest`: one self-contained page, no network needed to view it."""
    from plotly.offline import get_plotlyjs

    m = manifest
    q = _quality(m)
    figures = _figures(m, q)
    status = "PASSED" if m.gates_passed else "FAILED"
    body = [
        f"<h1>{_e(m.name)} {_e(m.version)} <span class='badge {'pass' if m.gates_passed else 'fail'}'>"
        f"{status}</span></h1>",
        f"<p class='meta'>Built {_e(m.created_utc)} by edgepack {_e(m.tools.get('edgepack'))} "
        f"(onnxruntime {_e(m.tools.get('onnxruntime'))}, onnx {_e(m.tools.get('onnx'))}). "
        f"Config hash <code>{_e(m.config_hash[:16])}</code>. Source: {_e(m.source.kind)} "
        f"<code>{_e(m.source.path)}</code>; {m.model.parameters:,} parameters"
        + (f"; task <code>{_e(m.model.task.name)}</code>" if m.model.task is not None else "") + ".</p>",
        f"<p class='meta'>Calibration: {m.data.calibration.samples} samples from "
        f"<code>{_e(m.data.calibration.source)}</code>. Evaluation: {m.data.evaluation.samples} samples, "
        f"{_e(m.data.evaluation.note)}.</p>",
    ]
    body += _failures(m)
    body += _model_io(m)
    body += _whose(m)
    body += _baseline(m, q)
    if figures:
        body.append("<h2>Charts</h2>")
        for f in figures:
            body.append(f"<figure><div class='plot' id='{f.id}'></div><figcaption>{f.caption}</figcaption></figure>")
    for tname, t in m.targets.items():
        body += _target(tname, t, m, q)
    if m.device_results:
        body += ["<h2>Device runs</h2>", "<ul>"]
        for d in m.device_results:
            body.append(f"<li>{_e(d.merged_utc)}: {_e(d.where)} — "
                        + ("passed" if d.passed else "<span class='fail'>FAILED</span>")
                        + (", device-exact numerics" if d.device_exact else ", numbers not device-exact")
                        + ("" if d.signed else " <span class='sub'>(unsigned device result)</span>")
                        + "".join(f"<br><span class='sub'>{_e(p.where)}: {_e(p.reason)}</span>" for p in d.problems)
                        + "</li>")
        body.append("</ul>")
    body.append("<p class='muted'>Re-verify this bundle anywhere with <code>edgepack verify &lt;bundle&gt;</code> "
                "(or <code>python -m edgepack.device verify &lt;bundle&gt;</code> with only numpy and a runtime).</p>")
    scripts = ""
    if figures:
        data = "{" + ",".join(f"{json.dumps(f.id)}:{f.json}" for f in figures) + "}"
        scripts = (f"<script>{_script_safe(get_plotlyjs())}</script>\n"
                   f"<script>var EDGEPACK_FIGURES = {_json_safe(data)};\n{_DRAW}</script>\n")
    return ("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<title>{_e(m.name)} {_e(m.version)} — {status}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n" + scripts + "</body>\n</html>\n")


def _json_safe(text: str) -> str:
    """JSON text that cannot end its <script> element or open a comment: <, > and & (which only
    occur inside JSON strings) as \\u escapes, and the two line separators JavaScript rejects."""
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _script_safe(js: str) -> str:
    """A library's source inside a <script> element: a literal `</script` in it would end the element."""
    return js.replace("</script", "<\\/script")


def _failures(m) -> list[str]:
    if not m.failures:
        return []
    return (["<h2>Failures</h2>", "<ul class='failures'>"]
            + [f"<li>{_e(f.text())}</li>" for f in m.failures] + ["</ul>"])


def _model_io(m) -> list[str]:
    rows = [f"<tr><td>{kind}</td><td><code>{_e(t.name)}</code></td><td>{_e(t.shape)}</td><td>{_e(t.dtype)}</td>"
            f"<td>{_e(t.layout or '–')}</td></tr>"
            for kind, ts in (("input", m.model.inputs), ("output", m.model.outputs)) for t in ts]
    return ["<h2>Model inputs and outputs</h2>",
            "<table><tr><th></th><th>name</th><th>shape</th><th>dtype</th><th>layout</th></tr>", *rows, "</table>"]


def _whose(m) -> list[str]:
    host = m.host
    exact = [d for d in m.device_results if d.device_exact]
    exact_s = "; ".join(_e(d.where) + (f" ({_e(d.emulation.get('requirements'))})" if d.emulation else "")
                        for d in exact) or "not measured for this bundle"
    return [
        "<h2>Whose numbers these are</h2>", "<dl class='legend'>",
        f"<dt>host</dt><dd>the artifact file run by this machine's runtime ({_e(host.cpu)}, {_e(host.arch)}, "
        f"ISA {_e(', '.join(host.isa) or 'unknown')}). These are the device's numbers only if the device runs "
        "the same kernels.</dd>",
        "<dt>reference</dt><dd>the artifact's int8 QDQ graph executed op by op without graph optimisation "
        "(dequantise → float op → requantise): the quantised model's device-independent numerics, free of any "
        "CPU's fused-kernel shortcuts.</dd>",
        f"<dt>device-exact</dt><dd>the device's own runtime build on the device's CPU — {exact_s}. When present, "
        "accuracy gates read these numbers. Emulated runs give exact numerics, never latency.</dd>",
        "<dt>latency</dt><dd>always measured on this host with the profile's threads capped at the host's "
        f"{host.cores} usable cores; for a target of another ISA it is <em>not</em> the device's latency and "
        "latency gates are not judged (unless a device run supplied its own latency).</dd>",
        "</dl>",
    ]


def _baseline(m, q: _Quality) -> list[str]:
    b = m.baseline
    acc = (f"top-1 {_f(b.metrics.top1)} %, top-5 {_f(b.metrics.top5)} %" if m.data.evaluation.labelled
           else "no labels: artifacts are compared with the float model's outputs")
    return ["<h2>Float baseline</h2>",
            f"<p><code>{_e(b.path)}</code> ({b.size_bytes / 1024:.1f} KiB, {_e(b.runtime)}): {acc} on "
            f"{b.metrics.samples} samples. The headline quality number below is {_e(q.why)}.</p>"]


def _latency(mt):
    """(latency record, whose) the report shows: a device run's own latency when merged, else the host's."""
    return (mt.device_latency, "device") if mt.device_latency else (mt.latency, "host")


def _target(tname: str, t, m, q: _Quality) -> list[str]:
    prof = t.profile
    labelled = m.data.evaluation.labelled
    out = [f"<h2>Target <code>{_e(tname)}</code> — {_e(prof.description)}</h2>",
           f"<p>CPU {_e(prof.cpu.model)} ({_e(prof.cpu.arch)}), {t.threads} threads; "
           + ("<span class='pass'>PASSED</span>" if t.passed else "<span class='fail'>FAILED</span>") + ".</p>"]
    out += _default_html(getattr(t, "default", None))
    qs = t.quantization_settings
    if qs:
        out.append("<p class='sub'>int8 settings: " + _e(", ".join(f"{k}={v}" for k, v in qs.items())) + "</p>")
    head = ["artifact", "size KiB", "weights vs float", "gated numbers", f"{_e(q.axis)}",
            "SQNR dB", "latency p50 ms", "gates"]
    out += ["<table class='artifacts'>", "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for a in t.artifacts:
        mt = a.metrics
        nm = mt.numerics.get(mt.gate_numerics)
        lat, where = _latency(mt)
        others = [f"{_e(k)}: {_quality_text(q, v)}, SQNR {_f(v.sqnr_db, 1)}"
                  for k, v in mt.numerics.items() if k != mt.gate_numerics]
        extra = ""
        if nm is not None and nm.task:
            extra += "<br><span class='sub'>" + ", ".join(
                f"{_e(k)} {_e(_task_value(v))}{(' ' + _e(v.unit)) if v.unit else ''}" for k, v in nm.task.items()
            ) + "</span>"
        if q.key == "top1" and labelled and nm is not None and m.baseline.metrics.top1 is not None \
                and nm.top1 is not None:
            extra += f"<br><span class='sub'>drop {_f(m.baseline.metrics.top1 - nm.top1)} points</span>"
        if others:
            extra += "<br><span class='sub'>" + "<br>".join(others) + "</span>"
        lat_note = f"{where}, {lat.threads} thr, p90 {_f(lat.p90_ms, 3)}, p99 {_f(lat.p99_ms, 3)}"
        if where == "host" and not mt.host_is_target_isa:
            lat_note += "; not this target's ISA"
        gates = "".join(_gate_item(v) for v in mt.gates) or "<li class='na'>none</li>"
        verdict = "<span class='pass'>pass</span>" if mt.passed else "<span class='fail'>FAIL</span>"
        out.append(
            f"<tr><td class='artifact'><b>{_e(a.kind)}</b> {verdict}<br><code>{_e(a.path)}</code><br>"
            f"<span class='sub'>{_e(a.runtime)}, {_e(a.precision)}</span></td>"
            f"<td class='num'>{a.size_bytes / 1024:.1f}</td>"
            f"<td class='num'>{_f(a.weight_ratio, 3)}× <span class='sub'>(file {_f(a.size_ratio, 3)}×"
            f"{_floor_sub(getattr(a, 'int8_size_ratio', None))})</span></td>"
            f"<td>{_e(mt.gate_numerics)}</td>"
            f"<td class='num'>{_quality_text(q, nm)}{extra}</td>"
            f"<td class='num'>{_f(nm.sqnr_db, 1) if nm is not None else '–'}</td>"
            f"<td class='num'>{_f(lat.p50_ms, 3)}<br><span class='sub'>{lat_note}</span></td>"
            f"<td><ul class='gates'>{gates}</ul></td></tr>")
        if nm is not None and len(nm.outputs) > 1:
            shown = "; ".join(f"<code>{_e(o.name)}</code> {_f(o.sqnr_db, 1)} dB, cos {_f(o.cosine, 4)}"
                              for o in nm.outputs)
            out.append(f"<tr><td></td><td colspan='7' class='sub'>per output ({_e(mt.gate_numerics)}): "
                       f"{shown}</td></tr>")
        for fl in mt.device_failures:
            out.append(f"<tr><td></td><td colspan='7' class='fail'>✗ on {_e(fl.where)}"
                       + (f" ({_e(fl.runtime)})" if fl.runtime else "") + f": {_e(fl.reason)}</td></tr>")
    out.append("</table>")
    if t.not_produced:
        out += ["<h3>Not produced</h3>", "<ul>"]
        for n in t.not_produced:
            node = f" (node <code>{_e(n.node)}</code>, op <code>{_e(n.op)}</code>)" if n.node else ""
            need = ("<span class='fail'>required: the target fails</span>" if n.required else "not required")
            out.append(f"<li><code>{_e(n.kind)}</code>{node} — {need}. {_e(n.reason)}</li>")
        out.append("</ul>")
    return out


def _gate_item(v) -> str:
    """One gate verdict: the words report.md uses, with a mark a plain font has (✓ ✗ –)."""
    cls, mark = ("pass", "✓") if v.passed else ("fail", "✗") if v.passed is False else ("na", "–")
    bound = "≥" if v.direction == "higher" else "≤"
    judged = "" if v.passed is not None else " (not judged)"
    return (f"<li class='{cls}'>{mark} {_e(v.gate)} {_e(_f(v.value, 3))} ({bound} {_e(v.threshold)}){judged}"
            + (f" <span class='sub'>{_e(v.note)}</span>" if v.note else "") + "</li>")


def _quality_text(q: _Quality, nm) -> str:
    v = q.of(nm)
    if v is None:
        return "–"
    if q.task:
        return _e(f"{v:.4g}" if q.unit != "%" else _f(v))
    return _e(_f(v, 1 if q.key == "sqnr_db" else 2))


# ---------------------------------------------------------------------------------------
# Charts


@dataclass
class _Figure:
    id: str
    json: str
    caption: str


@dataclass
class _Point:
    target: str
    kind: str
    path: str
    size_bytes: int
    latency_ms: float
    latency_where: str
    threads: int
    foreign_isa: bool
    quality: float | None
    numerics: str
    sqnr_db: float | None
    extra: dict[str, Any] = field(default_factory=dict)


def _layout(title: str, x: str, y: str, **kw) -> dict:
    base = dict(title=dict(text=title, x=0.01, xanchor="left"), template="plotly_white", height=480,
                margin=dict(l=70, r=30, t=60, b=70), xaxis=dict(title=dict(text=x)), yaxis=dict(title=dict(text=y)),
                hoverlabel=dict(align="left"))
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return base


def _capped(values, pad: float = 5.0):
    """Finite values for drawing: +inf (outputs identical to float) drawn `pad` above the largest
    finite value, -inf `pad` below the smallest; returns (drawn values, whether any was capped)."""
    finite = [v for v in values if _finite(v)]
    hi = (max(finite) if finite else 0.0) + pad
    lo = (min(finite) if finite else 0.0) - pad
    out, capped = [], False
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif math.isinf(v):
            out.append(hi if v > 0 else lo)
            capped = True
        else:
            out.append(v)
    return out, capped


def _is_inf(v) -> bool:
    return isinstance(v, float) and math.isinf(v)


def _num_text(v, digits=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}" if abs(v) >= 1e4 or (v and abs(v) < 1e-3) else f"{v:.{digits}f}"


def _figures(m, q: _Quality) -> list[_Figure]:
    import plotly.graph_objects as go

    targets = list(m.targets)
    colour = {t: _COLOURS[i % len(_COLOURS)] for i, t in enumerate(targets)}
    kinds = sorted({a.kind for t in m.targets.values() for a in t.artifacts})
    symbol = {k: _SYMBOLS[i % len(_SYMBOLS)] for i, k in enumerate(kinds)}
    points = []
    for tname, t in m.targets.items():
        for a in t.artifacts:
            mt = a.metrics
            nm = mt.numerics.get(mt.gate_numerics)
            lat, where = _latency(mt)
            points.append(_Point(tname, a.kind, a.path, a.size_bytes, lat.p50_ms, where, lat.threads,
                                 where == "host" and not mt.host_is_target_isa, q.of(nm), mt.gate_numerics,
                                 nm.sqnr_db if nm is not None else None, {"lat": lat}))
    figs: list[_Figure] = []

    def add(fig, caption: str):
        figs.append(_Figure(f"plot-{len(figs) + 1}", fig.to_json(), caption))

    if points:
        fig, caption = _tradeoff(go, m, q, points, colour, symbol)
        if fig is not None:
            add(fig, caption)
    if len(m.model.outputs) > 1 and points:
        fig, caption = _per_output(go, m, colour)
        if fig is not None:
            add(fig, caption)
    if points:
        fig, caption = _latency_ranges(go, m, points, colour)
        add(fig, caption)
    for tname, t in m.targets.items():
        for a in t.artifacts:
            res = _diagnosis(go, tname, a)
            if res is not None:
                add(*res)
    return figs


def _log_ticks(values) -> dict:
    """Tick positions and labels for a log axis over `values`: 1-2-5 steps, written out in full
    (plotly's own log ticks abbreviate 0.2 and 2 alike as "2")."""
    vs = [v for v in values if _finite(v) and v > 0]
    if not vs:
        return {}
    lo, hi = math.floor(math.log10(min(vs))), math.ceil(math.log10(max(vs)))
    ticks = [m * 10.0 ** e for e in range(lo, hi + 1) for m in (1, 2, 5) if min(vs) / 2.5 <= m * 10.0 ** e
             <= max(vs) * 2.5]
    return dict(tickvals=ticks, ticktext=[f"{t:.6g}" for t in ticks])


def _size_ref(sizes, max_px: float = 46.0) -> float:
    """plotly's sizeref for marker areas proportional to `sizes`, the largest `max_px` across."""
    return 2.0 * max(max(sizes), 1) / max_px ** 2


def _pareto(items, higher_is_better: bool):
    """The items no other item beats on both latency (lower) and quality: sorted by latency."""
    sign = 1 if higher_is_better else -1
    pts = [p for p in items if p[1] is not None and not math.isnan(p[1])]
    front = []
    for p in pts:
        dominated = any(o[0] <= p[0] and sign * o[1] >= sign * p[1] and (o[0] < p[0] or sign * o[1] > sign * p[1])
                        for o in pts)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p[0], -sign * p[1]))


def _find_number(obj, names, depth: int = 3):
    """The first number under any of `names` in `obj` or (breadth first, `depth` levels down) in
    its fields or mapping values; a {value: ...} record counts as its value."""
    level = [obj]
    for _ in range(depth + 1):
        nxt = []
        for c in level:
            v = _get(c, *names)
            v = _get(v, "value", default=v) if isinstance(v, dict) or hasattr(v, "value") else v
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
            children = c.values() if isinstance(c, dict) else vars(c).values() if hasattr(c, "__dict__") else ()
            nxt += [x for x in children if isinstance(x, dict) or hasattr(x, "__dict__")]
        level = nxt
    return None


def _trials(m, q: _Quality):
    """Search trials, when a target records them (`targets[t].search.trials`, not in the manifest
    yet): tuples of (target, p50 latency ms, quality, size bytes or None, label). Tolerant of the
    record's exact shape; a trial without a latency or this chart's quality number is left out."""
    out = []
    for tname, t in m.targets.items():
        search = _extra(t, "search")
        trials = _get(search, "trials") if search is not None else None
        for i, tr in enumerate(trials or []):
            value = _find_number(tr, (q.key,))
            lat = _find_number(tr, ("latency_p50_ms", "p50_ms", "latency_ms"))
            size = _find_number(tr, ("size_bytes",))
            if value is None or lat is None or not (_finite(lat) and lat > 0) or math.isnan(value):
                continue
            label = _get(tr, "name", "label", "id", "settings", default=f"trial {i + 1}")
            out.append((tname, lat, value, size if _finite(size) else None,
                        label if isinstance(label, str) else json.dumps(label, default=str)))
    return out


def _tradeoff(go, m, q: _Quality, points, colour, symbol):
    """a. quality × latency × size of every artifact, the Pareto front marked."""
    drawable = [p for p in points if p.quality is not None and _finite(p.latency_ms) and p.latency_ms > 0]
    if not drawable:
        return None, ""
    drawn, capped = _capped([p.quality for p in drawable])
    ref = _size_ref([p.size_bytes for p in drawable])
    fig = go.Figure()
    for tname in colour:
        mine = [(p, y) for p, y in zip(drawable, drawn) if p.target == tname]
        if not mine:
            continue
        fig.add_trace(go.Scatter(
            x=[p.latency_ms for p, _ in mine], y=[y for _, y in mine], mode="markers", name=_pe(tname),
            legendgroup="targets", legendgrouptitle=dict(text="target (colour)"),
            marker=dict(color=colour[tname], size=[p.size_bytes for p, _ in mine], sizemode="area", sizeref=ref,
                        sizemin=7, symbol=[symbol[p.kind] for p, _ in mine], opacity=0.8,
                        line=dict(width=1, color="#333")),
            hovertext=[_hover(p, q) for p, _ in mine], hoverinfo="text"))
    for kind, sym in symbol.items():  # a legend for the symbols
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=_pe(kind), legendgroup="kinds",
                                 legendgrouptitle=dict(text="artifact (symbol)"),
                                 marker=dict(symbol=sym, color="#888", size=10)))
    trials = _trials(m, q)
    if trials:
        t_drawn, _ = _capped([t[2] for t in trials])
        fig.add_trace(go.Scatter(
            x=[t[1] for t in trials], y=t_drawn, mode="markers", name="search trials", legendgroup="trials",
            marker=dict(color=[colour.get(t[0], "#888") for t in trials], size=7, symbol="x-thin-open", opacity=0.6,
                        line=dict(width=1.5)),
            hovertext=[f"<b>{_pe(t[0])}: {_pe(t[4])}</b><br>p50 {t[1]:.3f} ms<br>{_pe(q.axis)} {_num_text(t[2])}"
                       + (f"<br>size {t[3] / 1024:.1f} KiB" if t[3] is not None else "") for t in trials],
            hoverinfo="text"))
    front = _pareto([(p.latency_ms, p.quality, y) for p, y in zip(drawable, drawn)], q.higher_is_better)
    if front:
        fig.add_trace(go.Scatter(
            x=[f[0] for f in front], y=[f[2] for f in front], mode="lines+markers", name="Pareto front",
            legendgroup="front", line=dict(color="#444", dash="dot", shape="hv", width=1.5),
            marker=dict(symbol="circle-open", size=12, color="#444", line=dict(width=1.5)), hoverinfo="skip"))
    fig.update_layout(**_layout(
        f"{q.label} vs latency and size, every artifact", "latency p50 (ms, log scale)", q.axis,
        xaxis=dict(type="log", **_log_ticks([p.latency_ms for p in drawable] + [t[1] for t in trials])),
        height=540, legend=dict(groupclick="toggleitem")))
    whose = sorted({p.numerics for p in drawable})
    lat_whose = sorted({p.latency_where for p in drawable})
    foreign = sorted({p.target for p in drawable if p.foreign_isa})
    caption = (f"Each marker is one artifact: x its median (p50) latency, y {_e(q.why)} from its gated numbers "
               f"({_e(', '.join(whose))} numbers; see “Whose numbers”), marker area proportional to its file size "
               f"({min(p.size_bytes for p in drawable) / 1024:.1f}–{max(p.size_bytes for p in drawable) / 1024:.1f} "
               f"KiB). Latency is {_e(' / '.join(lat_whose))}-measured"
               + (f"; for {_e(', '.join(foreign))} it is this host's latency, not the device's" if foreign else "")
               + ". Ringed markers, joined by a dotted step line, are the Pareto front: no other artifact is both "
               f"faster and {'higher' if q.higher_is_better else 'lower'} in {_e(q.label)}."
               + (" An artifact whose outputs equal the float model's (SQNR ∞) is drawn just above the highest finite "
                  "value." if capped else "")
               + (" Crosses are search trials." if trials else ""))
    return fig, caption


def _hover(p: _Point, q: _Quality) -> str:
    lat = p.extra["lat"]
    return (f"<b>{_pe(p.target)} / {_pe(p.kind)}</b><br>{_pe(p.path)}<br>size {p.size_bytes / 1024:.1f} KiB"
            f"<br>p50 {lat.p50_ms:.3f} ms, p90 {lat.p90_ms:.3f}, p99 {lat.p99_ms:.3f} "
            f"({p.latency_where}, {p.threads} thr{', not this ISA' if p.foreign_isa else ''})"
            f"<br>{_pe(q.axis)}: {_num_text(p.quality)} ({_pe(p.numerics)} numbers)"
            + (f"<br>SQNR {_num_text(p.sqnr_db, 1)} dB" if q.key != "sqnr_db" else ""))


def _per_output(go, m, colour):
    """b. per-output SQNR of every artifact (gated numbers), one bar per model output."""
    labels, rows = [], []
    for tname, t in m.targets.items():
        for a in t.artifacts:
            nm = a.metrics.numerics.get(a.metrics.gate_numerics)
            if nm is None or not nm.outputs:
                continue
            labels.append(f"{_pe(tname)}/{_pe(a.kind)}")
            rows.append((a.metrics.gate_numerics, {o.name: o.sqnr_db for o in nm.outputs}))
    if not rows:
        return None, ""
    names = [t.name for t in m.model.outputs]
    for _, r in rows:
        names += [n for n in r if n not in names]
    all_values = [r.get(n) for _, r in rows for n in names]
    drawn_all, capped = _capped(all_values)
    fig = go.Figure()
    for j, n in enumerate(names):
        raw = [r.get(n) for _, r in rows]
        drawn = [drawn_all[i * len(names) + j] for i in range(len(rows))]
        fig.add_trace(go.Bar(
            x=labels, y=drawn, name=_pe(n), text=["∞" if _is_inf(v) else "" for v in raw], textposition="inside",
            hovertext=[f"<b>{lab}</b><br>output {_pe(n)}: {_num_text(v, 1)} dB ({_pe(w)} numbers)"
                       for lab, v, (w, _) in zip(labels, raw, rows)], hoverinfo="text"))
    fig.update_layout(**_layout("SQNR per model output, every artifact", "artifact (target/kind)",
                                "SQNR vs float output (dB)", barmode="group", legend=dict(title=dict(text="output")),
                                xaxis=dict(tickangle=-30)))
    caption = ("Signal-to-quantisation-noise ratio of each model output against the same output of the float model "
               f"on the {m.data.evaluation.samples} evaluation samples, from each artifact's gated numbers ("
               + _e(", ".join(sorted({w for w, _ in rows}))) + "; see “Whose numbers”). Higher is better; "
               "about 6 dB per bit of precision."
               + (" An output identical to float (SQNR ∞) is drawn just above the highest finite bar."
                  if capped else ""))
    return fig, caption


def _latency_ranges(go, m, points, colour):
    """c. latency percentiles per artifact: p50 marker, p90 tick, whisker to p99, mean cross."""
    fig = go.Figure()
    lats = []
    for tname in colour:
        mine = [p for p in points if p.target == tname]
        if not mine:
            continue
        x = [f"{_pe(p.target)}/{_pe(p.kind)}" for p in mine]
        ls = [p.extra["lat"] for p in mine]
        lats += [v for lat in ls for v in (lat.p50_ms, lat.p99_ms) if _finite(v) and v > 0]
        hover = [f"<b>{_pe(p.target)} / {_pe(p.kind)}</b><br>p50 {lat.p50_ms:.3f} ms<br>p90 {lat.p90_ms:.3f} ms"
                 f"<br>p99 {lat.p99_ms:.3f} ms<br>mean {lat.mean_ms:.3f} ms<br>{lat.runs} runs after {lat.warmup} "
                 f"warm-up, {lat.threads} thr, {p.latency_where}{', not this ISA' if p.foreign_isa else ''}"
                 for p, lat in zip(mine, ls)]
        fig.add_trace(go.Scatter(
            x=x, y=[lat.p50_ms for lat in ls], mode="markers", name=_pe(tname), legendgroup=_pe(tname),
            marker=dict(color=colour[tname], size=11, symbol="circle"),
            error_y=dict(type="data", symmetric=False, array=[max(lat.p99_ms - lat.p50_ms, 0) for lat in ls],
                         arrayminus=[0] * len(ls), color=colour[tname], thickness=1.5, width=8),
            hovertext=hover, hoverinfo="text"))
        fig.add_trace(go.Scatter(
            x=x, y=[lat.p90_ms for lat in ls], mode="markers", name=f"{_pe(tname)} p90", legendgroup=_pe(tname),
            showlegend=False, marker=dict(color=colour[tname], size=16, symbol="line-ew", line=dict(width=3,
                                                                                                   color=colour[tname])),
            hovertext=hover, hoverinfo="text"))
        fig.add_trace(go.Scatter(
            x=x, y=[lat.mean_ms for lat in ls], mode="markers", name=f"{_pe(tname)} mean", legendgroup=_pe(tname),
            showlegend=False, marker=dict(color="#222", size=7, symbol="x-thin", line=dict(width=1.5, color="#222")),
            hovertext=hover, hoverinfo="text"))
    log = bool(lats) and max(lats) / min(lats) > 20
    fig.update_layout(**_layout("Latency percentiles per artifact", "artifact (target/kind)",
                                "latency (ms" + (", log scale)" if log else ")"),
                                yaxis=dict(type="log", **_log_ticks(lats)) if log
                                else dict(type="linear", rangemode="tozero"),
                                xaxis=dict(tickangle=-30)))
    runs = sorted({p.extra["lat"].runs for p in points})
    where = sorted({p.latency_where for p in points})
    foreign = sorted({p.target for p in points if p.foreign_isa})
    caption = ("Percentiles, not a full distribution: the manifest keeps p50, p90, p99 and the mean of each "
               f"artifact's timed runs ({'/'.join(str(r) for r in runs)} runs per artifact), not the samples. "
               "Dot: p50 (median); bar: p90; whisker top: p99; cross: mean. "
               f"Measured on {_e(' and '.join(where))} with each target's thread count"
               + (f"; for {_e(', '.join(foreign))} the host is not of the target's ISA, so these are not the "
                  "device's latencies" if foreign else "") + ".")
    return fig, caption


def _diagnosis(go, tname: str, a):
    """d. per-node sensitivity of one artifact, when its manifest entry has a diagnosis."""
    diag = _extra(a, "diagnosis")
    nodes = _get(diag, "nodes") if diag is not None else None
    rows = []
    for n in nodes or []:
        s = _get(n, "sqnr_db")
        if isinstance(s, (int, float)) and not (isinstance(s, float) and math.isnan(s)):
            rows.append((str(_get(n, "name", default="?")), str(_get(n, "op", default="?")), float(s)))
    if not rows:
        return None
    rows.sort(key=lambda r: r[2])
    worst = rows[:_WORST_NODES]
    drawn, capped = _capped([r[2] for r in worst])
    labels = [f"{_pe(r[0])} ({_pe(r[1])})" for r in worst]
    # a category label must be unique; two nodes of one name keep both bars
    seen: dict[str, int] = {}
    for i, lab in enumerate(labels):
        seen[lab] = seen.get(lab, 0) + 1
        if seen[lab] > 1:
            labels[i] = f"{lab} #{seen[lab]}"
    fig = go.Figure(go.Bar(
        x=drawn, y=labels, orientation="h", marker=dict(color="#EF553B"),
        text=["∞" if _is_inf(r[2]) else "" for r in worst], textposition="inside",
        hovertext=[f"<b>{_pe(r[0])}</b><br>op {_pe(r[1])}<br>SQNR {_num_text(r[2], 1)} dB" for r in worst],
        hoverinfo="text"))
    fig.update_layout(**_layout(f"Most sensitive nodes: {_pe(tname)} / {_pe(a.kind)}", "SQNR vs float (dB)",
                                "node (op)", height=max(320, 26 * len(worst) + 120),
                                yaxis=dict(autorange="reversed", automargin=True)))
    whose = _get(diag, "numerics", "whose", "measured_on", "method")
    caption = (f"The {len(worst)} nodes (of {len(rows)} diagnosed) of <code>{_e(tname)}/{_e(a.kind)}</code> whose "
               "outputs are furthest from the float model's, by SQNR of that node's output (lowest first), as "
               "recorded in the manifest's diagnosis"
               + (f" ({_e(whose)})" if isinstance(whose, str) else "") + ". Lower means the node loses more to "
               "quantisation."
               + (" A node identical to float (SQNR ∞) is drawn just above the highest finite bar." if capped else ""))
    return fig, caption


def _floor_sub(ratio) -> str:
    """The weight bytes against the model's theoretical int8 size, when measured."""
    return "" if ratio is None else f"; int8 floor {_f(ratio, 3)}×"


def _default_html(d) -> list[str]:
    """The artifact the target ships by default, and why."""
    if d is None:
        return []
    if d.kind:
        head = (f"<p><strong>Default artifact: <code>{_e(d.path)}</code> ({_e(d.kind)})</strong> — {_e(d.reason)}; "
                f"ranked by {_e(d.basis)}.</p>")
    else:
        head = f"<p class='fail'><strong>No default artifact</strong> — {_e(d.reason)}.</p>"
    notes = "".join(f"<li>{_e(n)}</li>" for n in d.notes)
    return [head] + ([f"<ul class='sub'>{notes}</ul>"] if notes else [])
