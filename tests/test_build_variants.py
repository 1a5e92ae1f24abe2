"""Builds from inputs the README promises to accept, beyond the main end-to-end path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import models
import pytest
from conftest import PY, cli, explain, load_manifest, ort_session, run, run_batches, sqnr_db

from edgepack.errors import ConfigError


def test_opset_11_onnx_model_builds(tmp_path, tiny_calib, local_profile):
    """Older exporters still write opset 11; "any ONNX file" must give a working int8 artifact
    (per-channel QDQ needs opset >= 13, so the graph has to be upgraded or quantised per tensor)."""
    model = models.tiny_onnx(tmp_path / "old_opset.onnx", opset=11, bn=True)
    out = tmp_path / "out"
    proc = cli("build", "--onnx", model, "--calib", tiny_calib, "--targets", local_profile, "--out", out,
               "--latency-runs", "2")
    assert proc.returncode == 0, explain(proc)
    bundle = out / "old_opset-0.1.0"
    x = models.tiny_inputs(16, seed=3)
    want = run_batches(ort_session(model), x)
    got = run_batches(ort_session(bundle / "edge-local" / "model.int8.ort"), x)
    assert sqnr_db(want, got) > 25
    assert load_manifest(bundle)["status"] == "passed"


def test_module_entry_point_with_installed_command(tmp_path, tiny_model, local_profile):
    """`--calib module:function` (README: "module:function") for a module in the working
    directory, run through the installed `edgepack` command rather than `python -m`."""
    script = Path(PY).with_name("edgepack")
    assert script.is_file(), "the edgepack console script is not installed next to the interpreter"
    (tmp_path / "calib_feed.py").write_text(textwrap.dedent("""
        import numpy as np

        def batches():
            rng = np.random.default_rng(0)
            for _ in range(4):
                yield rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
    """))
    proc = run([str(script), "build", "--onnx", str(tiny_model), "--calib", "calib_feed:batches",
                "--targets", str(local_profile), "--out", "out", "--latency-runs", "2"], cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    m = load_manifest(tmp_path / "out" / "tiny-0.1.0")
    assert m["data"]["calibration"]["samples"] == 16


def test_cli_prints_error_messages_verbatim(tmp_path, tiny_dynamic_model, tiny_calib):
    """The one stderr line is the error's own message: nothing in it (e.g. "[model]", the
    config section it points to) may be swallowed by the terminal formatting."""
    from edgepack.config import load_config
    from edgepack.preflight import preflight

    cfg = tmp_path / "edgepack.toml"
    cfg.write_text(f'name = "m"\nout = "{tmp_path / "out"}"\ntargets = ["rpi4"]\n'
                   f'[model]\nonnx = "{tiny_dynamic_model}"\n'
                   f'[data]\ncalibration = "{tiny_calib}"\n')
    with pytest.raises(ConfigError) as e:
        preflight(load_config(cfg))
    assert "[model] input_shape" in str(e.value)
    proc = cli("build", cfg)
    assert proc.returncode == 2, explain(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {e.value}"], explain(proc)
