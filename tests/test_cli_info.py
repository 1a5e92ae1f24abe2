"""`edgepack targets` and `edgepack inspect` on real artifacts."""

from __future__ import annotations

import json
import re

import onnx
import pytest
from conftest import base_env, cli, explain, load_manifest

from edgepack.inspection import inspect_artifact
from edgepack.stages.graph import op_counts

SHIPPED = ("rpi4", "rpi5", "android-arm64", "x86-64")


def test_targets_lists_shipped_profiles():
    proc = cli("targets")
    assert proc.returncode == 0, explain(proc)
    for name in SHIPPED:
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", proc.stdout, re.M), \
            f"target {name!r} is not listed in full:\n{proc.stdout}"


def _profile_rows(stdout: str) -> dict[str, list[str]]:
    """Table rows by profile name: [name, cpu model, (arch), threads, weight bits, first artifact, more...]."""
    rows, current = {}, None
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in SHIPPED and len(cells) >= 6:
            current = rows[cells[0]] = cells
        elif current is not None and len(cells) == 1 and cells[0].startswith(("ort-", "tflite-")):
            current.append(cells[0])
        elif not cells:
            current = None
    return rows


@pytest.mark.parametrize("columns", ["80", "250"])
def test_targets_table_shows_every_artifact_kind_whole(columns):
    from edgepack.targets import load_targets

    proc = cli("targets", env=base_env(COLUMNS=columns))
    assert proc.returncode == 0, explain(proc)
    assert max(len(line) for line in proc.stdout.splitlines()) <= int(columns), proc.stdout
    rows = _profile_rows(proc.stdout)
    assert set(rows) == set(SHIPPED), proc.stdout
    profiles = load_targets()
    for name in SHIPPED:
        assert rows[name][5:] == list(profiles[name].artifacts), (name, proc.stdout)
        assert rows[name][4] == ("7-bit" if profiles[name].resolved_reduce_range() else "8-bit")
    assert rows["x86-64"][4] == "7-bit" and rows["rpi4"][4] == "8-bit"
    assert "…" not in proc.stdout


def test_targets_dir_adds_a_profile(tmp_path):
    from conftest import REPO

    (tmp_path / "edge-box.toml").write_text((REPO / "targets" / "rpi5.toml").read_text())
    proc = cli("targets", "--targets-dir", tmp_path, env=base_env(COLUMNS="250"))
    assert proc.returncode == 0, explain(proc)
    assert "edge-box" in proc.stdout and "rpi4" in proc.stdout


def _inspect_json(path):
    proc = cli("inspect", path, "--json")
    assert proc.returncode == 0, explain(proc)
    return json.loads(proc.stdout)


def test_inspect_float_onnx(tiny_model):
    info = _inspect_json(tiny_model)
    assert info["inputs"] == [{"name": "input", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert info["outputs"][0]["name"] == "logits"
    assert info["op_counts"] == op_counts(onnx.load(str(tiny_model)))
    assert info["quantization"].startswith("none")
    assert info["size_bytes"] == tiny_model.stat().st_size


def test_inspect_bundle_artifacts(unseen_bundle):
    b = unseen_bundle.bundle
    assert unseen_bundle.proc.returncode == 0, explain(unseen_bundle.proc)
    qdq = inspect_artifact(b / "rpi4" / "model.int8.qdq.onnx")
    assert "QDQ" in qdq["quantization"]
    assert qdq["op_counts"]["QuantizeLinear"] >= 1 and qdq["op_counts"]["DequantizeLinear"] >= 1
    assert qdq["weight_dtypes"]["int8"] >= 7  # every conv and the fc
    assert qdq["inputs"][0]["name"] == "image" and qdq["inputs"][0]["shape"] == [1, 1, 16, 16]

    i8 = _inspect_json(b / "rpi4" / "model.int8.ort")
    assert i8["inputs"][0] == {"name": "image", "shape": [1, 1, 16, 16], "dtype": "float32"}
    assert i8["outputs"][0]["shape"] == [1, 10]
    assert any("QLinearConv" in k for k in i8["op_counts"])
    assert "fused integer ops" in i8["quantization"] and i8["weight_dtypes"]["int8"] >= 7

    f32 = inspect_artifact(b / load_manifest(b)["targets"]["x86-64"]["artifacts"][0]["path"])  # ort-float
    assert f32["quantization"].startswith("none") and "int8" not in f32["weight_dtypes"]
    assert not any("nchwc" in k for k in f32["op_counts"])


def test_inspect_human_output(unseen_bundle):
    path = unseen_bundle.bundle / "x86-64" / "model.int8.ort"
    proc = cli("inspect", path, env=base_env(COLUMNS="80"))
    assert proc.returncode == 0, explain(proc)
    out = proc.stdout
    info = inspect_artifact(path)
    assert re.search(r"^\s*input\s+image\s+\[1, 1, 16, 16\]\s+float32\s*$", out, re.M), out
    assert f"quantisation: {info['quantization']}" in out and "{'" not in out
    for op, n in info["op_counts"].items():
        assert re.search(rf"^\s*{re.escape(op)}\s+{n}\s*$", out, re.M), (op, out)
    assert f"operators ({sum(info['op_counts'].values())})" in out


def test_inspect_ort_format_line_reports_a_version(unseen_bundle):
    """The .ort header names the ORT flatbuffer format version (a number), and the graph's
    producer separately — never the producer where a version belongs."""
    info = inspect_artifact(unseen_bundle.bundle / "rpi4" / "model.float32.ort")
    m = re.search(r"ORT format version ([^;)]*)[;)]", info["format"])
    assert m, info["format"]
    assert re.fullmatch(r"\d+(\.\d+)*", m.group(1)), f"inspect reports 'ORT format version {m.group(1)}'"
    assert "produced by pytorch" in info["format"]


@pytest.mark.parametrize("name, content", [("missing.ort", None), ("notes.txt", b"hello"), ("fake.ort", b"\0" * 64)],
                         ids=["missing", "unknown-suffix", "not-a-flatbuffer"])
def test_inspect_bad_files_exit_2(tmp_path, name, content):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    proc = cli("inspect", p)
    assert proc.returncode == 2, explain(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and name in lines[0], explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
