"""Bad input through the CLI: exit 2, one line on stderr naming the file or field, no
traceback, and no bundle (finished or partial) left in the output folder."""

from __future__ import annotations

import models
import numpy as np
import pytest
from conftest import cli, explain, write_toml


def assert_clean_refusal(proc, out_dir, *needles):
    assert proc.returncode == 2, explain(proc)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, explain(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr:\n{explain(proc)}"
    for n in needles:
        assert n in lines[0], f"{n!r} not named in: {lines[0]}"
    leftovers = sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []
    assert leftovers == [], f"left in {out_dir}: {leftovers}"


def _npy(path, array):
    np.save(path, array)
    return path


def _build(model, calib, out, *extra, targets="rpi4"):
    return cli("build", "--onnx", model, "--calib", calib, "--targets", targets, "--out", out, "--latency-runs", "2",
               *extra)


def test_missing_model_file(tmp_path, tiny_calib):
    out = tmp_path / "out"
    proc = _build(tmp_path / "no_such_model.onnx", tiny_calib, out)
    assert_clean_refusal(proc, out, "no_such_model.onnx")


def test_error_output_is_exactly_one_line(tmp_path, tiny_calib):
    """Strictly one line: no blank line (e.g. from a progress display) before the message."""
    out = tmp_path / "out"
    proc = _build(tmp_path / "no_such_model.onnx", tiny_calib, out)
    assert proc.returncode == 2, explain(proc)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error:"), repr(proc.stderr)


def test_corrupt_model_file(tmp_path, tiny_calib):
    bad = tmp_path / "corrupt_model.onnx"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    assert_clean_refusal(_build(bad, tiny_calib, out), out, "corrupt_model.onnx")


def test_dynamic_batch_without_input_shape(tmp_path, tiny_dynamic_model, tiny_calib):
    out = tmp_path / "out"
    proc = _build(tiny_dynamic_model, tiny_calib, out)
    assert_clean_refusal(proc, out, tiny_dynamic_model.name, "--input-shape")


def test_dynamic_batch_with_input_shape_builds(tmp_path, tiny_dynamic_model, tiny_calib, local_profile):
    """The counterpart of the refusal above: the same model builds once a shape is given."""
    import json

    out = tmp_path / "out"
    proc = cli("build", "--onnx", tiny_dynamic_model, "--input-shape", "2,3,8,8", "--calib", tiny_calib,
               "--targets", local_profile, "--out", out, "--latency-runs", "2", "--json")
    assert proc.returncode == 0, explain(proc)
    m = json.loads((out / "tiny_dyn-0.1.0" / "manifest.json").read_text())
    assert m["model"]["batch"] == 2 and m["model"]["inputs"][0]["shape"] == [2, 3, 8, 8]
    assert "BatchNormalization" not in m["model"]["op_counts"]
    assert json.loads(proc.stdout)["name"] == "tiny_dyn"


def test_minus_one_dims_are_dynamic(tmp_path, tiny_dynamic_model, tiny_calib, local_profile):
    """Some exporters write -1 for a dynamic dimension: it is dynamic, so --input-shape fixes it."""
    import onnx

    m = onnx.load(str(tiny_dynamic_model))
    m.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    path = tmp_path / "minus_one.onnx"
    onnx.save(m, str(path))
    out = tmp_path / "out"
    refused = cli("build", "--onnx", path, "--calib", tiny_calib, "--targets", local_profile, "--out", out)
    assert_clean_refusal(refused, out, "dynamic")
    proc = cli("build", "--onnx", path, "--input-shape", "2,3,8,8", "--calib", tiny_calib,
               "--targets", local_profile, "--out", out, "--latency-runs", "2")
    assert proc.returncode == 0, explain(proc)
    import json

    manifest = json.loads((out / "minus_one-0.1.0" / "manifest.json").read_text())
    assert manifest["model"]["inputs"][0]["shape"] == [2, 3, 8, 8]


@pytest.mark.parametrize("name, array, needle", [
    # neutral file names, so the needle can only come from the message itself
    ("c1.npy", models.tiny_inputs(8)[:, :1], "expects [1, 3, 8, 8]"),
    ("c2.npy", np.ones((8, 3, 8, 8), np.int32), "int32"),
    ("c3.npy", np.where(np.arange(8)[:, None, None, None] == 5, np.nan, models.tiny_inputs(8)), "NaN"),
    ("c4.npy", np.zeros((0, 3, 8, 8), np.float32), "empty"),
], ids=["wrong-shape", "int-dtype", "nan", "zero-samples"])
def test_bad_calibration_data(tmp_path, tiny_model, name, array, needle):
    calib = _npy(tmp_path / name, array)
    out = tmp_path / "out"
    assert_clean_refusal(_build(tiny_model, calib, out), out, name, needle)


def test_bad_evaluation_data(tmp_path, tiny_model, tiny_calib):
    ev = tmp_path / "eval_bad.npz"
    np.savez(ev, x=models.tiny_inputs(6), y=np.arange(5))  # one label short
    out = tmp_path / "out"
    assert_clean_refusal(_build(tiny_model, tiny_calib, out, "--eval", ev), out, "eval_bad.npz", "labels")


def test_missing_calibration_file(tmp_path, tiny_model):
    out = tmp_path / "out"
    assert_clean_refusal(_build(tiny_model, tmp_path / "nowhere.npz", out), out, "nowhere.npz")


def test_unknown_target(tmp_path, tiny_model, tiny_calib):
    out = tmp_path / "out"
    assert_clean_refusal(_build(tiny_model, tiny_calib, out, targets="rpi4,jetson-nano"), out, "jetson-nano")


def test_unknown_calibration_method(tmp_path, tiny_model, tiny_calib):
    out = tmp_path / "out"
    proc = _build(tiny_model, tiny_calib, out, "--calibration-method", "wishful")
    assert_clean_refusal(proc, out, "--calibration-method: 'wishful' is not one of minmax, percentile, entropy")


def _config(tmp_path, body: str):
    return write_toml(tmp_path / "bad_config.toml", body)


def test_malformed_toml(tmp_path, tiny_model, tiny_calib):
    cfg = _config(tmp_path, f"""
        name = "broken"
        out = "out"
        targets = ["rpi4"
        [model]
        onnx = "{tiny_model}"
    """)
    assert_clean_refusal(cli("build", cfg), tmp_path / "out", "bad_config.toml")


def test_missing_config_file(tmp_path):
    assert_clean_refusal(cli("build", tmp_path / "absent.toml"), tmp_path / "out", "absent.toml")


VALID = """
    name = "cfg"
    out = "out"
    targets = ["rpi4"]
    [model]
    onnx = "{model}"
    [data]
    calibration = "{calib}"
"""


@pytest.mark.parametrize("extra, field", [
    ("calibration_samples = \"many\"", "[data] calibration_samples: "),
    ("surprise = 1", "[data] surprise: unknown key"),
], ids=["wrong-type", "unknown-field"])
def test_config_wrong_type_or_unknown_field(tmp_path, tiny_model, tiny_calib, extra, field):
    cfg = _config(tmp_path, VALID.format(model=tiny_model, calib=tiny_calib) + f"    {extra}\n")
    assert_clean_refusal(cli("build", cfg), tmp_path / "out", "bad_config.toml", field)


def test_config_unknown_top_level_field(tmp_path, tiny_model, tiny_calib):
    body = VALID.format(model=tiny_model, calib=tiny_calib).replace('out = "out"', 'out = "out"\n    outt = "typo"')
    assert_clean_refusal(cli("build", _config(tmp_path, body)), tmp_path / "out", "bad_config.toml",
                         "outt: unknown key (did you mean 'out'?)")


@pytest.mark.parametrize("section, line, field", [
    ("gates", "max_accuracy_drop = -5.0", "[gates] max_accuracy_drop: "),
    ("gates", "max_size_ratio = -1.0", "[gates] max_size_ratio: "),
    ("gates", "max_latency_ms = 0.0", "[gates] max_latency_ms: "),
    ("quantization", "percentile = 150.0", "[quantization] percentile: "),
], ids=["negative-accuracy-drop", "negative-size-ratio", "zero-latency", "percentile-over-100"])
def test_config_out_of_range_overrides_are_refused(tmp_path, tiny_model, tiny_calib, section, line, field):
    """The profile schema refuses these values (ge=0 / gt=0 / le=100); the same values given
    as config overrides must be refused too, naming the field."""
    body = VALID.format(model=tiny_model, calib=tiny_calib) + f"    [{section}]\n    {line}\n"
    assert_clean_refusal(cli("build", _config(tmp_path, body)), tmp_path / "out", field)


@pytest.mark.parametrize("with_eval", [True, False], ids=["with-eval", "calib-as-eval"])
def test_too_few_calib_samples_for_batch(tmp_path, tiny_batch4_model, tiny_calib, tiny_eval, with_eval):
    """A batch-4 model with --calibration-samples 2: the calibration set has no full batch."""
    out = tmp_path / "out"
    extra = ["--calibration-samples", "2"] + (["--eval", str(tiny_eval)] if with_eval else [])
    proc = _build(tiny_batch4_model, tiny_calib, out, *extra)
    assert_clean_refusal(proc, out, "batch")


def test_too_few_eval_samples_for_batch(tmp_path, tiny_batch4_model, tiny_calib, tiny_eval):
    body = VALID.format(model=tiny_batch4_model, calib=tiny_calib) + \
        f'    evaluation = "{tiny_eval}"\n    evaluation_samples = 2\n'
    assert_clean_refusal(cli("build", _config(tmp_path, body)), tmp_path / "out", "batch")
