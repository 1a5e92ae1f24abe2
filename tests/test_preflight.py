"""Problems are found before any expensive work, all at once, in the user's own words:
flags for a command line, `[section] key` for a config file. And a config's identity does
not depend on where its project is checked out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from conftest import PY, REPO, base_env, cli, explain, run, write_toml
from onnx import TensorProto, helper
from typer.testing import CliRunner

from edgepack.cli import _parse_shape, app
from edgepack.config import CALIBRATION_METHODS, FLAGS, BuildConfig, ConfigProblems, config_from_dict, load_config
from edgepack.errors import ConfigError
from edgepack.preflight import preflight
from edgepack.targets import load_profile, resolve_target


def _flags(onnx_path, calib, /, **extra) -> dict:
    """The dict `edgepack build` makes from its flags (`section__key=value` sets one key)."""
    data = {"name": "m", "model": {"onnx": str(onnx_path)}, "data": {"calibration": str(calib)}, "targets": ["rpi4"]}
    for key, value in extra.items():
        section, _, field = key.partition("__")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[section] = value
    return data


def _problems(exc_info) -> list[str]:
    assert isinstance(exc_info.value, ConfigProblems), exc_info.value
    assert "\n" not in str(exc_info.value)
    return exc_info.value.problems


def _invoke(*args, **env):
    return CliRunner(env={"COLUMNS": "80", **env}).invoke(app, [str(a) for a in args])


def _two_input_onnx(path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two", [a, b], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# ------------------------------------------------------------------ the command line


def test_typo_in_target_and_method_is_one_line_naming_both_flags(tmp_path, tiny_model, tiny_calib):
    out = tmp_path / "out"
    proc = cli("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "rpi44",
               "--calibration-method", "minmx", "--out", out)
    assert proc.returncode == 2, explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1, repr(proc.stderr)
    line = proc.stderr.strip()
    assert line.startswith("error: 2 problems: "), line
    assert "--targets: unknown target 'rpi44' (did you mean 'rpi4'?)" in line
    assert "--calibration-method: 'minmx' is not one of minmax, percentile, entropy (did you mean 'minmax'?)" in line
    assert "field" not in line and "quantization" not in line  # flag words, not config words
    assert not out.exists()


def test_typo_path_imports_neither_onnx_nor_torch(tmp_path, tiny_model, tiny_calib):
    """A mistyped name is refused before the heavy libraries load (that is what makes it fast)."""
    code = ("import sys\n"
            "from edgepack.cli import main\n"
            f"sys.argv = ['edgepack', 'build', '--onnx', {str(tiny_model)!r}, '--calib', {str(tiny_calib)!r},\n"
            "            '--targets', 'rpi44', '--calibration-method', 'minmx']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, sorted(m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules))\n")
    proc = run([PY, "-c", code], cwd=tmp_path, env=base_env(PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.split("\n")[0] == "2 []", explain(proc)


def test_every_enumeration_flag_in_flag_words(tiny_model, tiny_calib):
    r = _invoke("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "rpi4", "--tflite-io", "foo",
                "--tflite-layout", "nhwc", "--prune", "0.5", "--prune-criterion", "l22",
                "--prune-granularity", "filtre", "--distill-mode", "stong")
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 5 problems: "), r.stderr
    for part in ("--tflite-io: 'foo' is not one of float32, int8, uint8;",
                 "--tflite-layout: 'nhwc' is not one of NHWC, NCHW (did you mean 'NHWC'?)",
                 "--prune-criterion: unknown criterion 'l22' (did you mean 'l2'?)",
                 "--prune-granularity: 'filtre' is not one of filter, fine, vector, kernel (did you mean 'filter'?)",
                 "--distill-mode: 'stong' is not one of weak, strong (did you mean 'strong'?)"):
        assert part in lines[0], lines[0]
    r = _invoke("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "rpi4", "--prune", "0.5")
    assert r.stderr == ("error: --prune: compression needs a PyTorch factory (--torch file.py:factory), "
                        "but the model is an ONNX file\n")
    r = _invoke("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "rpi4", "--distill-epochs", "3")
    assert r.stderr == ("error: --distill-epochs: distillation needs a compression to recover from: "
                        "add --prune or --lowrank-energy\n")


def test_missing_flags_are_named(tmp_path):
    r = _invoke("build")
    assert r.exit_code == 2
    assert r.stderr == ("error: 3 problems: --onnx/--torch/--pt2: give exactly one of --onnx, --torch, --pt2 "
                        "(got none); --calib: required, but not given; --targets: required, but not given\n")


def test_parser_errors_are_one_line_too(tiny_model, tiny_calib):
    r = _invoke("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "rpi4",
                "--calibration-samples", "abc")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr + r.stdout
    assert r.stderr.startswith("error: --calibration-samples: 'abc': "), r.stderr
    r = _invoke("build", "--onnx", tiny_model, "--targes", "rpi4")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--targes" in r.stderr, r.stderr


@pytest.mark.parametrize("text, shape", [("1,3,224,224", [1, 3, 224, 224]), ("1x3x224x224", [1, 3, 224, 224]),
                                         (" 2, 8 ", [2, 8]), ("1,x,3", None), ("1x3,224", None), ("1,,3", None),
                                         ("1,0,3", None), ("", None)])
def test_input_shape_parsing(text, shape):
    parsed, problem = _parse_shape(text)
    assert parsed == shape
    assert (problem is None) == (shape is not None)


@pytest.mark.parametrize("shapes, dtypes, model, problems", [
    (["input_ids=1,64", "attention_mask=1,64"], ["input_ids=int64"],
     {"inputs": {"input_ids": {"shape": [1, 64], "dtype": "int64"}, "attention_mask": {"shape": [1, 64]}}}, []),
    (["sr="], [], {"inputs": {"sr": {"shape": []}}}, []),
    (["1,3,8,8"], [], {"input_shape": [1, 3, 8, 8]}, []),
    (["1,3,8,8", "b=1,4"], [], {}, ["give one --input-shape DIMS for a single-input model, or NAME=DIMS"]),
    (["=1,4"], [], {}, ["'=1,4': expected NAME=DIMS"]),
    (["a=1,x"], ["b"], {"inputs": {"a": {"shape": None}}},
     ["a: '1,x' is not a list of integers", "'b': expected NAME=DTYPE"]),
], ids=["named", "scalar", "plain", "mixed", "no-name", "bad-dims-and-dtype"])
def test_input_flags_per_input(shapes, dtypes, model, problems):
    from edgepack.cli import _input_flags

    found: list = []
    assert _input_flags(shapes, dtypes, found) == model
    assert len(found) == len(problems)
    for (_, text), words in zip(found, problems):
        assert text.startswith(words) or words in text, text


def test_input_shape_per_input_on_the_command_line(tmp_path):
    model = _two_input_onnx(tmp_path / "two.onnx")
    calib = tmp_path / "c.npz"
    np.savez(calib, a=np.zeros((8, 4), np.float32), b=np.zeros((8, 4), np.float32))
    r = _invoke("build", "--onnx", model, "--calib", calib, "--targets", "x86-64", "--input-shape", "a=1,5",
                "--input-shape", "c=1,4", "--out", tmp_path / "out")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "names input(s) 'c' the graph does not have (inputs: a, b)" in r.stderr, r.stderr
    r = _invoke("build", "--onnx", model, "--calib", calib, "--targets", "x86-64", "--input-shape", "a=1,5",
                "--out", tmp_path / "out")
    assert r.exit_code == 2 and "input 'a' has static shape [1, 4], input_shape [1, 5] contradicts it" in r.stderr
    assert not (tmp_path / "out").exists()


def test_input_shape_typo_is_a_flag_problem_with_the_others(tiny_model, tiny_calib):
    r = _invoke("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "rpi44", "--input-shape", "1,x,3")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: 2 problems: --input-shape: '1,x,3' is not a list of integers"), r.stderr
    assert "--targets: unknown target 'rpi44'" in r.stderr


def test_flags_with_a_config_file_are_refused_not_ignored(tmp_path):
    cfg = write_toml(tmp_path / "edgepack.toml", 'name = "x"\n')
    r = _invoke("build", cfg, "--out", tmp_path / "elsewhere", "--calibration-method", "entropy")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: --out, --calibration-method: not used with a config file"), r.stderr


def test_build_version_option_is_still_the_release_version(monkeypatch, tiny_model, tiny_calib):
    seen = {}

    def fake_preflight(cfg):
        seen["cfg"] = cfg
        raise ConfigError("stop here")

    monkeypatch.setattr("edgepack.preflight.preflight", fake_preflight)
    r = _invoke("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "rpi4", "--version", "1.2.3")
    assert r.exit_code == 2 and r.stderr == "error: stop here\n"
    assert seen["cfg"].version == "1.2.3" and seen["cfg"].out.name == "dist"


def test_edgepack_version():
    import edgepack

    r = _invoke("--version")
    assert r.exit_code == 0 and r.stdout == f"edgepack {edgepack.__version__}\n"


def test_build_help_groups_options_and_lists_choices():
    r = _invoke("build", "--help")
    assert r.exit_code == 0
    text = r.stdout
    for panel in ("Model", "Data", "Targets & output", "Quantisation", "TFLite", "Compression (torch only)",
                  "Verification"):
        assert f"─ {panel} ─" in text, panel
    assert "minmax | percentile | entropy" in text and "float32 | int8 | uint8" in text
    assert "l1 | l2 | bn_scale | taylor | random" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_flag_table_names_real_build_options():
    import typer.main

    command = typer.main.get_command(app).commands["build"]
    options = {o for p in command.params for o in p.opts}
    for flag in FLAGS.values():
        assert set(flag.split("/")) <= options, flag


def _stage(name: str):
    """A pipeline stage module, wherever it lives (edgepack.stages.X or edgepack.X)."""
    import importlib

    try:
        return importlib.import_module(f"edgepack.stages.{name}")
    except ModuleNotFoundError:
        return importlib.import_module(f"edgepack.{name}")


def test_calibration_methods_are_the_quantizers():
    assert CALIBRATION_METHODS == tuple(_stage("quantize").CALIBRATORS)


# ------------------------------------------------------------------ preflight, in process


def test_valid_config_passes_and_returns_its_profiles(tiny_model, tiny_calib):
    cfg = config_from_dict(_flags(tiny_model, tiny_calib, targets=["x86-64", "rpi4"]), source="command line")
    assert [p.name for p in preflight(cfg)] == ["x86-64", "rpi4"]


def test_preflight_is_free_the_second_time(monkeypatch, tiny_model, tiny_calib):
    import edgepack.checks as checks  # the cheap checks, which preflight runs first

    cfg = config_from_dict(_flags(tiny_model, tiny_calib), source="command line")
    first = preflight(cfg)
    monkeypatch.setattr(checks, "load_targets", lambda *a, **k: pytest.fail("checked again"))
    assert preflight(cfg) == first
    changed = cfg.model_copy(update={"targets": ["x86-64"]})
    with pytest.raises(pytest.fail.Exception):
        preflight(changed)


def test_config_file_problems_all_at_once_in_toml_words(tmp_path, tiny_model):
    np.savez(tmp_path / "calib.npz", pixels=models.tiny_inputs(8), labels=np.arange(8))
    shutil.copy(tiny_model, tmp_path / "model.onnx")
    cfg = write_toml(tmp_path / "edgepack.toml", """
        name = "x"
        outt = "dist"
        targets = ["rpi44", "x86-64"]
        [model]
        onnx = "model.onnx"
        [data]
        calibration = "calib.npz"
        calibration_samples = "many"
        x_key = "pixel"
        y_key = "label"
        [quantization]
        calibration_method = "entropi"
        reduce_range = "maybe"
        [tflite]
        io_type = "int9"
    """)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    problems = _problems(e)
    assert str(e.value).startswith(f"{cfg}: 8 problems: ")
    assert set(problems) == {
        "[data] calibration_samples: Input should be a valid integer, unable to parse string as an integer",
        "[quantization] reduce_range: expected true or false or \"auto\", got 'maybe'",
        "[tflite] io_type: 'int9' is not one of float32, int8, uint8 (did you mean 'int8'?)",
        "outt: unknown key (did you mean 'out'?)",
        "targets: unknown target 'rpi44' (did you mean 'rpi4'?)",
        ("[quantization] calibration_method: 'entropi' is not one of minmax, percentile, entropy "
        "(did you mean 'entropy'?)"),
        ("[data] calibration: calib.npz: no array 'pixel' for the inputs (has: pixels, labels) "
        "(did you mean 'pixels'?), so set x_key in [data] to their key"),
        ("[data] calibration: calib.npz: no array 'label' for the labels (has: pixels, labels) "
        "(did you mean 'labels'?), so set y_key in [data] to their key"),
    }


def test_nested_unknown_key_suggests_the_known_one(tmp_path, tiny_model, tiny_calib):
    cfg = write_toml(tmp_path / "e.toml", f"""
        name = "x"
        targets = ["rpi4"]
        [model]
        onnx = "{tiny_model}"
        [data]
        calibraton = "{tiny_calib}"
        [compress.prune]
        ratio = 0.5
        granulatiry = "fine"
    """)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    problems = _problems(e)
    assert "[data] calibraton: unknown key (did you mean 'calibration'?)" in problems
    assert "[compress.prune] granulatiry: unknown key (did you mean 'granularity'?)" in problems
    assert "[data] calibration: missing (required)" in problems


def test_a_missing_default_label_key_is_no_problem_but_a_set_one_is(tmp_path, tiny_model):
    np.savez(tmp_path / "c.npz", x=models.tiny_inputs(8))
    ok = config_from_dict(_flags(tiny_model, tmp_path / "c.npz"), source="command line")
    preflight(ok)
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(tiny_model, tmp_path / "c.npz", data__y_key="y"), source="command line"))
    assert _problems(e) == [(f"--calib: {tmp_path / 'c.npz'}: no array 'y' for the labels (has: x), so store them "
                            "under 'y' (a config file can set [data] y_key)")]


def test_data_sources_are_checked_without_importing_them(tmp_path, tiny_model, tiny_calib):
    (tmp_path / "feed.py").write_text("raise SystemExit('imported!')\n")
    for spec in (f"{tmp_path / 'feed.py'}:batches", "some_module:batches"):
        preflight(config_from_dict(_flags(tiny_model, spec), source="command line"))
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(tiny_model, tiny_calib, data__evaluation=f"{tmp_path / 'nope.py'}:fn"),
                                   source="command line"))
    assert _problems(e) == [f"--eval: evaluation data entry point file {tmp_path / 'nope.py'} does not exist"]
    (tmp_path / "images").mkdir()
    with pytest.raises(ConfigError, match=r"--calib: calibration data .*images is an image folder: declare its"):
        preflight(config_from_dict(_flags(tiny_model, tmp_path / "images"), source="command line"))
    (tmp_path / "c.csv").write_text("1,2\n")
    with pytest.raises(ConfigError, match=r"c.csv: expected a .npy or .npz file"):
        preflight(config_from_dict(_flags(tiny_model, tmp_path / "c.csv"), source="command line"))


def test_two_input_model_with_one_array_is_refused_before_cleaning(monkeypatch, tmp_path, tiny_calib):
    monkeypatch.setattr(_stage("graph"), "clean_float_graph", lambda *a, **k: pytest.fail("cleaned"))
    model = _two_input_onnx(tmp_path / "two.onnx")
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(model, tiny_calib), source="command line"))
    assert _problems(e) == [(f"--calib: calibration data {tiny_calib}: a .npy holds one array but the model has "
                            "2 inputs (a, b); give an .npz with one key per input name")]


def test_two_input_model_names_the_missing_key_and_bad_shape(tmp_path):
    model = _two_input_onnx(tmp_path / "two.onnx")
    calib = tmp_path / "c.npz"
    np.savez(calib, a=np.zeros((8, 4), np.float32), c=np.zeros((8, 4), np.float32))
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(model, calib), source="command line"))
    assert _problems(e) == [(f"--calib: {calib}: no array for model input(s) 'b' (has: a, c); "
                            "a multi-input model's data has one key per input name")]
    np.savez(calib, a=np.zeros((8, 4), np.float32), b=np.zeros((8, 5), np.float32))
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(model, calib), source="command line"))
    assert _problems(e) == [(f"--calib: calibration data {calib}: input 'b': samples have shape [5] (array [8, 5]) "
                            "but model input 'b' expects [1, 4], i.e. samples of [4]")]
    np.savez(calib, a=np.zeros((8, 4), np.float32), b=np.zeros((6, 1, 4), np.float32))
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(model, calib), source="command line"))
    assert _problems(e) == [(f"--calib: calibration data {calib}: inputs give different numbers of model calls "
                            "(a: 8, b: 6)")]
    np.savez(calib, a=np.zeros((8, 4), np.float32), b=np.zeros((8, 1, 4), np.float32))
    assert [p.name for p in preflight(config_from_dict(_flags(model, calib), source="command line"))] == ["rpi4"]


def test_model_is_read_only_when_the_cheap_checks_pass(tmp_path, tiny_calib):
    model = _two_input_onnx(tmp_path / "two.onnx")
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(model, tiny_calib, targets=["rpi44"]), source="command line"))
    assert _problems(e) == ["--targets: unknown target 'rpi44' (did you mean 'rpi4'?)"]


@pytest.mark.parametrize("array, extra, words", [
    (models.tiny_inputs(8)[:, :1], {}, ("--calib: calibration data {calib}: samples have shape [1, 8, 8] "
                                       "(array [8, 1, 8, 8]) but model input 'input' expects [1, 3, 8, 8]")),
    (np.ones((8, 3, 8, 8), np.int32), {}, ("--calib: calibration data {calib}: dtype int32 but model input 'input' "
                                          "is float32")),
    (np.zeros((0, 3, 8, 8), np.float32), {}, "--calib: calibration data {calib} is empty"),
    (models.tiny_inputs(8), {"data__calibration_samples": 2}, ("--calibration-samples: 2 is fewer than the model's "
                                                              "batch size 4")),
    (models.tiny_inputs(3), {}, "--calib: calibration data {calib}: 3 samples is fewer than the model's batch size 4"),
], ids=["shape", "dtype", "empty", "samples-flag", "too-few"])
def test_data_headers_are_checked_against_the_model_input(tmp_path, tiny_batch4_model, array, extra, words):
    calib = tmp_path / "c.npy"
    np.save(calib, array)
    if "batch size 4" not in words:  # the batch-1 model for the shape and dtype checks
        model = models.tiny_onnx(tmp_path / "m.onnx", batch=1)
    else:
        model = tiny_batch4_model
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(model, calib, **extra), source="command line"))
    (problem,) = _problems(e)
    assert problem.startswith(words.format(calib=calib)), problem


def test_input_shape_against_the_onnx_input(tiny_model, tiny_dynamic_model, tiny_calib):
    with pytest.raises(ConfigError, match=r"--input-shape: .*rank 4 .* input_shape \[1, 3, 8\] has rank 3"):
        preflight(config_from_dict(_flags(tiny_model, tiny_calib, model={"onnx": str(tiny_model),
                                                                         "input_shape": [1, 3, 8]}),
                                   source="command line"))
    with pytest.raises(ConfigError, match=r"--input-shape: .* static shape \['N', 3, 8, 8\], input_shape "
                                          r"\[1, 3, 9, 9\] contradicts it"):
        preflight(config_from_dict(_flags(tiny_dynamic_model, tiny_calib, model={
            "onnx": str(tiny_dynamic_model), "input_shape": [1, 3, 9, 9]}), source="command line"))
    with pytest.raises(ConfigError, match=r"--calib: .*: 32 samples is fewer than the model's batch size 40"):
        preflight(config_from_dict(_flags(tiny_dynamic_model, tiny_calib, model={
            "onnx": str(tiny_dynamic_model), "input_shape": [40, 3, 8, 8]}), source="command line"))
    # a dynamic input without input_shape is refused before the model loads, with the flag that fixes it
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(tiny_dynamic_model, tiny_calib), source="command line"))
    assert _problems(e) == [f"--input-shape: {tiny_dynamic_model}: input(s) 'input' ['N', 3, 8, 8] have dynamic "
                            "dims; give static shapes with --input-shape ..."]


def test_every_dynamic_input_is_named_in_the_configs_words(tmp_path):
    from onnx import helper as h

    vi = [h.make_tensor_value_info(n, TensorProto.INT64, ["b", "t"]) for n in ("ids", "mask")]
    graph = h.make_graph([h.make_node("Add", ["ids", "mask"], ["y"])], "g", vi,
                         [h.make_tensor_value_info("y", TensorProto.INT64, ["b", "t"])])
    model = tmp_path / "dyn2.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(model))
    calib = tmp_path / "c.npz"
    np.savez(calib, ids=np.zeros((4, 8), np.int64), mask=np.ones((4, 8), np.int64))
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(model, calib), source="command line"))
    assert _problems(e) == [f"--input-shape: {model}: input(s) 'ids' ['b', 't'], 'mask' ['b', 't'] have dynamic "
                            "dims; give static shapes with --input-shape ids=... --input-shape mask=..."]
    cfg = tmp_path / "edgepack.toml"
    cfg.write_text(f'name = "m"\ntargets = ["x86-64"]\n[model]\nonnx = "{model.name}"\n[model.inputs.ids]\n'
                   f'shape = [1, 8]\n[data]\ncalibration = "c.npz"\n')
    with pytest.raises(ConfigError) as e:
        preflight(load_config(cfg))
    assert str(e.value).endswith("input(s) 'mask' ['b', 't'] have dynamic dims; give static shapes with "
                                 "[model.inputs.mask] shape"), str(e.value)


def test_torch_model_needs_its_file_and_shape(tmp_path, tiny_calib):
    data = _flags("x", tiny_calib, model={"torch": f"{tmp_path / 'nope.py'}:build"})
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(data, source="command line"))
    assert _problems(e) == [f"--torch: model file {tmp_path / 'nope.py'} does not exist",
                            ("--input-shape: required for a PyTorch model (the static input shape it is exported "
                            "with, e.g. 1,3,224,224)")]


def test_api_dicts_keep_dotted_field_names():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"name": "m", "model": {"onnx": "m.onnx"}, "data": {"calibration": "c.npy"},
                          "targets": ["rpi4"], "tflite": {"layout": "nhcw"}})
    assert _problems(e)[0] == "field 'tflite.layout': 'nhcw' is not one of NHWC, NCHW (did you mean 'NHWC'?)"
    assert str(e.value).startswith("config: 3 problems: ")  # + the model and data files that do not exist


# ------------------------------------------------------------------ target profiles


def test_profile_problems_are_all_named_with_did_you_mean(tmp_path):
    bad = tmp_path / "box.toml"
    text = (REPO / "targets" / "rpi4.toml").read_text()
    bad.write_text(text.replace("threads = 4", "threads = 0").replace('"ort-int8"', '"ort-int9"'))
    with pytest.raises(ConfigError) as e:
        load_profile(bad)
    assert _problems(e) == ["threads: Input should be greater than or equal to 1",
                            ("artifacts[1]: 'ort-int9' is not one of ort-float, ort-int8, tflite-float32, "
                            "tflite-float16, tflite-dynamic-int8, tflite-int8, ort-float16, ort-dynamic-int8, "
                            "ort-int16, ort-int8-pot, ort-binary, ort-ternary, tflite-int16x8 "
                            "(did you mean 'ort-int8'?)")]
    assert str(e.value).startswith(f"{bad}: 2 problems: ")


def test_a_broken_profile_blocks_only_itself(tmp_path, tiny_model, tiny_calib):
    (tmp_path / "broken.toml").write_text("threads = 1\n")
    assert resolve_target("rpi4", [tmp_path]).name == "rpi4"
    with pytest.raises(ConfigError, match=r"broken.toml: .*\[cpu\]: missing"):
        resolve_target("broken", [tmp_path])
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(_flags(tiny_model, tiny_calib, targets=["rpi4", "broken"],
                                          targets_dirs=[str(tmp_path)]), source="command line"))
    (problem,) = _problems(e)
    assert problem.startswith(f"--targets: {tmp_path / 'broken.toml'}: ")


def test_a_profiles_calibration_method_is_checked_unless_overridden(tmp_path, tiny_model, tiny_calib):
    (tmp_path / "box.toml").write_text((REPO / "targets" / "rpi4.toml").read_text()
                                       .replace('calibration_method = "minmax"', 'calibration_method = "minmx"'))
    data = _flags(tiny_model, tiny_calib, targets=["box"], targets_dirs=[str(tmp_path)])
    with pytest.raises(ConfigError) as e:
        preflight(config_from_dict(data, source="command line"))
    assert _problems(e) == [("--targets: target 'box': [quantization] calibration_method: 'minmx' is not one of "
                            "minmax, percentile, entropy (did you mean 'minmax'?)")]
    preflight(config_from_dict({**data, "quantization": {"calibration_method": "entropy"}}, source="command line"))


# ------------------------------------------------------------------ location-free identity


def _checkout(root):
    """A project with its config, model, profile and a data file one level up (shared data)."""
    proj = root / "proj"
    (proj / "profiles").mkdir(parents=True)
    (root / "shared").mkdir()
    models.tiny_onnx(proj / "model.onnx")
    np.save(root / "shared" / "calib.npy", models.tiny_inputs(8))
    (proj / "feed.py").write_text("def batches():\n    return []\n")
    (proj / "profiles" / "box.toml").write_text((REPO / "targets" / "x86-64.toml").read_text())
    return write_toml(proj / "edgepack.toml", """
        name = "same"
        out = "dist"
        targets = ["rpi4", "profiles/box.toml"]
        targets_dirs = ["profiles"]
        [model]
        onnx = "model.onnx"
        [data]
        calibration = "../shared/calib.npy"
        evaluation = "feed.py:batches"
    """)


def test_config_hash_is_the_same_in_two_checkouts(tmp_path):
    a = load_config(_checkout(tmp_path / "a"))
    b = load_config(_checkout(tmp_path / "elsewhere" / "deeper" / "b"))
    assert a.data.calibration != b.data.calibration  # the paths that open files are absolute...
    assert a.data.calibration == str(tmp_path / "a" / "proj" / ".." / "shared" / "calib.npy")
    assert a.config_hash() == b.config_hash()  # ...but what the build is does not depend on them
    dump = a.portable_dump()
    assert dump == b.portable_dump()
    assert str(tmp_path) not in json.dumps(dump)
    assert "out" not in dump
    assert dump["model"]["onnx"] == "model.onnx"
    assert dump["data"] == {**dump["data"], "calibration": "../shared/calib.npy", "evaluation": "feed.py:batches"}
    assert dump["targets"] == ["rpi4", "profiles/box.toml"] and dump["targets_dirs"] == ["profiles"]
    assert a.base_dir == tmp_path / "a" / "proj"


def test_config_hash_ignores_out_but_not_what_is_built(tmp_path):
    path = _checkout(tmp_path)
    base = load_config(path)
    path.write_text(path.read_text().replace('out = "dist"', 'out = "/somewhere/else"'))
    assert load_config(path).config_hash() == base.config_hash()
    path.write_text(path.read_text().replace("../shared/calib.npy", "../shared/other.npy"))
    assert load_config(path).config_hash() != base.config_hash()


def test_absolute_paths_inside_the_project_hash_like_relative_ones(tmp_path):
    path = _checkout(tmp_path)
    relative = load_config(path)
    path.write_text(path.read_text().replace('onnx = "model.onnx"', f'onnx = "{path.parent / "model.onnx"}"'))
    assert load_config(path).config_hash() == relative.config_hash()


def test_flag_configs_are_relative_to_the_current_folder(tmp_path, monkeypatch):
    hashes = []
    for where in (tmp_path / "one", tmp_path / "two" / "deeper"):
        where.mkdir(parents=True)
        monkeypatch.chdir(where)
        rel = config_from_dict(_flags("m.onnx", "data/c.npy"), source="command line")
        absolute = config_from_dict(_flags(where / "m.onnx", where / "data" / "c.npy"), source="command line")
        assert rel.config_hash() == absolute.config_hash()
        assert absolute.portable_dump()["data"]["calibration"] == "data/c.npy"
        hashes.append(rel.config_hash())
    assert hashes[0] == hashes[1]


def test_portable_path_forms(tmp_path):
    cfg = BuildConfig.model_validate(_flags("m.onnx", "c.npy"))
    cfg._base_dir = tmp_path / "proj"
    assert cfg.portable_path(tmp_path / "proj" / "sub" / "m.onnx") == "sub/m.onnx"
    assert cfg.portable_path(f"{tmp_path / 'proj'}/../data/c.npz") == "../data/c.npz"  # written relative
    assert cfg.portable_path("/datasets/c.npz") == "/datasets/c.npz"  # written absolute, outside the project
    assert cfg.portable_path(f"{tmp_path / 'proj' / 'feed.py'}:batches") == "feed.py:batches"
    assert cfg.portable_path("package.module:batches") == "package.module:batches"
    assert cfg.portable_path("./x/../c.npy") == "c.npy"
    assert BuildConfig.model_validate(_flags("m.onnx", "c.npy")).base_dir == Path.cwd()


def test_the_example_config_hashes_without_its_location(tmp_path):
    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "examples", copy / "examples")
    shutil.copytree(REPO / "calibration", copy / "calibration")
    here = load_config(REPO / "examples" / "digits" / "edgepack.toml")
    there = load_config(copy / "examples" / "digits" / "edgepack.toml")
    assert here.config_hash() == there.config_hash()
    assert here.portable_dump()["data"]["calibration"] == "../../calibration/digits/calib.npz"


def test_in_process_cli_leaves_nothing_behind(tmp_path, tiny_model, tiny_calib):
    out = tmp_path / "out"
    r = _invoke("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "rpi4,rpi4", "--out", out)
    assert r.exit_code == 2 and r.stderr == "error: --targets: target 'rpi4' is named twice\n"
    assert not out.exists()


def test_task_flags_become_the_task_section(tiny_model, tiny_calib):
    from edgepack.cli import _task_flags

    problems: list = []
    assert _task_flags("detection", ["anchors_axis=-1", "score_threshold=0.3", "objectness=true", "box_format=xyxy"],
                       problems) == {"name": "detection", "options": {"anchors_axis": -1, "score_threshold": 0.3,
                                                                     "objectness": True, "box_format": "xyxy"}}
    assert problems == []
    assert _task_flags(None, ["a=1"], problems) is None and problems[-1][1] == "--task-option needs --task NAME"
    r = _invoke("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "x86-64", "--task", "detecton")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--task: 'detecton' is not one of" in r.stderr and "(did you mean 'detection'?)" in r.stderr
