"""report.html: written beside report.md from the manifest, self-contained (no network), every
manifest string escaped, and every chart drawn by a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgepack.manifest.models import Manifest, SearchRecord
from edgepack.report import render_report
from edgepack.report_html import render_html

HOSTILE = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def built(digits_example):
    return digits_example


@pytest.fixture(scope="module")
def page(built) -> str:
    return (built.bundle / "report.html").read_text(encoding="utf-8")


def _diagnosed(m: Manifest) -> int:
    return sum(1 for t in m.targets.values() for a in t.artifacts if a.diagnosis and a.diagnosis.get("nodes"))


def _search(trials) -> SearchRecord:
    """A search record (edgepack.search's shape) of (name, metrics, p50 ms, size bytes) trials."""
    return SearchRecord.model_validate({
        "trials": [{"index": i, "name": name, "why": "test", "kind": "ort-int8", "settings": {}, "kept_float": {},
                    "seconds": 0.1, "error": None, "passed": False, "failed_gates": [], "metrics": metrics,
                    "latency_p50_ms": p50, "size_bytes": size} for i, (name, metrics, p50, size) in enumerate(trials)],
        "runs": [{"kind": "ort-int8", "budget": {"max_trials": 8, "max_seconds": 600}, "stopped": "test",
                  "chosen": None, "added": [], "seconds": 1.0}]})


def _variant(m: Manifest) -> Manifest:
    """The example's manifest with what it lacks: a second model output (per-output SQNR), one
    failed gate (a failures list), a not-produced artifact, and the future fields the page
    draws when present (a target's search trials, an artifact's per-node diagnosis)."""
    doc = m.to_json()
    doc["model"]["outputs"].append({"name": "aux", "shape": [1, 4], "dtype": "float32", "layout": None})
    for t in doc["targets"].values():
        for a in t["artifacts"]:
            for nm in a["metrics"]["numerics"].values():
                first = nm["outputs"][0] if nm["outputs"] else {"name": "linear", "sqnr_db": nm["sqnr_db"],
                                                                "cosine": 0.99, "max_abs_error": 0.1}
                nm["outputs"] = [first, {**first, "name": "aux", "sqnr_db": 21.5}]
    a0 = doc["targets"]["rpi4"]["artifacts"][1]
    a0["metrics"]["gates"][0].update(passed=False, value=2.5)
    doc["targets"]["rpi4"]["not_produced"] = [{"kind": "tflite-float16", "reason": "no FP16 kernel for this op",
                                              "node": "conv/1", "op": "Conv", "required": False}]
    m2 = Manifest.model_validate(doc).with_verdict()
    t = m2.targets["rpi4"]
    nodes = [{"name": f"block{i}/conv", "op": "Conv", "sqnr_db": 40.0 - i} for i in range(25)]
    arts = [t.artifacts[0], t.artifacts[1].model_copy(update={"diagnosis": {"nodes": nodes}}), *t.artifacts[2:]]
    trials = [(f"trial {i}", {"top1": 97.0 + i / 4}, 0.01 + i / 500, 30000 + 1000 * i) for i in range(6)]
    t2 = t.model_copy(update={"artifacts": arts, "search": _search(trials)})
    return m2.model_copy(update={"targets": {**m2.targets, "rpi4": t2}})


# ---------------------------------------------------------------------------------------
# The page as written


def test_report_html_is_written_beside_report_md(built, page):
    m = built.manifest
    assert (built.bundle / "report.md").is_file()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert f"{m.name} {m.version}" in page and ("PASSED" if m.gates_passed else "FAILED") in page
    for t in m.targets:
        assert f"Target <code>{t}</code>" in page
        for a in m.targets[t].artifacts:
            assert f"<code>{a.path}</code>" in page
    for kind in ("host", "reference", "device-exact"):  # the whose-numbers legend
        assert f"<dt>{kind}</dt>" in page
    for io in [*m.model.inputs, *m.model.outputs]:
        assert f"<code>{io.name}</code>" in page


def test_page_needs_no_network(page):
    from plotly.offline import get_plotlyjs

    # nothing loaded from elsewhere: every <script> is inline, no stylesheet link, no CSS import
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"<link\b", page, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", page, re.I)
    assert not re.search(r"<(img|iframe|object|embed)\b[^>]*(src|data)\s*=\s*['\"]?(https?:)?//", page, re.I)
    # plotly.js is embedded exactly once, inline
    js = get_plotlyjs()
    assert page.count(js[:200]) == 1
    assert page.count("<script>") == 2
    # what the page adds around plotly.js is small (the charts are JSON, not images)
    assert len(page.encode()) - len(js.encode()) < 400_000


def test_failures_use_report_md_text(built):
    m = _variant(built.manifest)
    assert m.failures, "the variant has a failed gate"
    page, md = render_html(m), render_report(m)
    assert "FAILED" in page and "<h2>Failures</h2>" in page
    for f in m.failures:
        assert f"- {f.text()}" in md
        assert f"<li>{_escaped(f.text())}</li>" in page
    assert "tflite-float16" in page and "no FP16 kernel for this op" in page  # not produced, with the reason


def test_hostile_names_are_escaped(built):
    m = built.manifest
    model = m.model.model_copy(update={
        "inputs": [i.model_copy(update={"name": HOSTILE}) for i in m.model.inputs],
        "outputs": [o.model_copy(update={"name": HOSTILE + "'\"&"}) for o in m.model.outputs]})
    t0 = next(iter(m.targets.values()))
    art = t0.artifacts[0]
    art = art.model_copy(update={"kind": HOSTILE, "diagnosis": {"nodes": [{"name": HOSTILE, "op": HOSTILE,
                                                                            "sqnr_db": 3.0}]}})
    t0 = t0.model_copy(update={"artifacts": [art, *t0.artifacts[1:]],
                               "search": _search([(HOSTILE, {"top1": 90.0}, 0.05, 1000)])})
    hostile = m.model_copy(update={"name": HOSTILE, "version": HOSTILE, "model": model,
                                   "targets": {HOSTILE: t0, **{k: v for k, v in m.targets.items()}}})
    page = render_html(hostile)
    assert HOSTILE not in page
    assert "<script>alert" not in page and "</script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown as text
    figs = _figures(page)  # and in the charts: as text plotly shows literally, never as a tag
    texts = json.dumps(figs)
    assert HOSTILE not in texts and "&lt;script&gt;alert(1)&lt;/script&gt;" in texts
    assert page.count("<script>") == page.count("</script>") == 2


def test_render_html_does_not_import_torch(built):
    code = ("import sys\nfrom edgepack.manifest.files import read_manifest\nfrom edgepack.report_html import "
            f"render_html\nrender_html(read_manifest({str(built.bundle)!r}))\n"
            "assert not [k for k in sys.modules if k.split('.')[0] == 'torch'], 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------
# In a real browser


class _Plots(HTMLParser):
    """From a rendered DOM: the (tag, class) of every element inside each chart div, and the
    elements of the page whose class marks an error."""

    def __init__(self):
        super().__init__()
        self.plots: dict[str, list[tuple[str, str]]] = {}
        self.errors: list[str] = []
        self._current: str | None = None
        self._depth = 0
        self._in_error = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        if "plot-error" in cls.split():
            self._in_error = True
            self.errors.append("")
        if self._current is not None:
            self._depth += tag == "div"
            self.plots[self._current].append((tag, cls))
        elif tag == "div" and "plot" in cls.split() and (a.get("id") or "").startswith("plot-"):
            self._current, self._depth = a["id"], 1
            self.plots[self._current] = []

    def handle_endtag(self, tag):
        if tag == "p":
            self._in_error = False
        if self._current is not None and tag == "div":
            self._depth -= 1
            if self._depth == 0:
                self._current = None

    def handle_data(self, data):
        if self._in_error:
            self.errors[-1] += data


def _dump_dom(html_file: Path, profile: Path) -> str:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=10000", "--dump-dom", html_file.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "</html>" in proc.stdout, proc.stderr[-3000:]
    return proc.stdout


def _check_rendered(source: str, dom: str) -> int:
    """Every chart div of the page holds a drawn plotly chart with a title and both axis titles."""
    expected = re.findall(r"<div class='plot' id='(plot-\d+)'>", source)
    p = _Plots()
    p.feed(dom)
    assert not p.errors, p.errors
    assert sorted(p.plots) == sorted(expected)
    rendered = 0
    for pid, tags in p.plots.items():
        classes = {c for _, cls in tags for c in cls.split()}
        assert ("svg", "main-svg") in tags, f"{pid}: no rendered <svg class=\"main-svg\">"
        assert {"gtitle", "xtitle", "ytitle"} <= classes, f"{pid}: a title or axis label is missing"
        rendered += 1
    assert dom.count('data-rendered="true"') == rendered == len(expected)
    return rendered


@needs_chromium
def test_charts_render_in_headless_chromium(built, page, tmp_path):
    dom = _dump_dom(built.bundle / "report.html", tmp_path / "profile")
    # the example: quality × latency × size, the latency percentiles (one output, no search
    # trials) and one per-node sensitivity chart per diagnosed int8 artifact
    assert _check_rendered(page, dom) == 2 + _diagnosed(built.manifest) and _diagnosed(built.manifest) >= 1


@needs_chromium
def test_every_optional_chart_renders_in_headless_chromium(built, tmp_path):
    m = _variant(built.manifest)
    source = render_html(m)
    f = tmp_path / "report.html"
    f.write_text(source, encoding="utf-8")
    dom = _dump_dom(f, tmp_path / "profile")
    # + per-output SQNR (two outputs); the rpi4 ort-int8 diagnosis is replaced (its 20 worst of 25 nodes)
    assert _check_rendered(source, dom) == 3 + _diagnosed(m)
    traces = [tr for f in _figures(source).values() for tr in f["data"]]
    trials = [tr for tr in traces if tr.get("name") == "search trials"]
    assert len(trials) == 1 and len(trials[0]["x"]) == 6
    bars = [tr["y"] for tr in traces if tr.get("orientation") == "h"]
    nodes = next(y for y in bars if y[0] == "block24/conv (Conv)")  # the replaced rpi4 diagnosis
    assert len(nodes) == 20 and "block4/conv (Conv)" not in nodes


def _figures(page: str) -> dict:
    """The charts' plotly JSON as the page embeds it, by plot div id."""
    m = re.search(r"var EDGEPACK_FIGURES = (\{.*?\});\n", page, re.S)
    assert m, "no chart data in the page"
    return json.loads(m.group(1))


def _escaped(s: str) -> str:
    import html

    return html.escape(s, quote=True)
