"""A user's own task metric: `[task] metric = "file.py:function"` (edgepack.verification.tasks.Custom).

Real metric files are written to tmp_path and imported as a build would; bad returns and
raising functions must be one-line errors naming the function and what was expected.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgepack.config import config_from_dict, load_config
from edgepack.errors import ConfigError
from edgepack.verification.gates import all_passed, evaluate_gates
from edgepack.verification.tasks import Custom, CustomNotEvaluated, make_task

GOOD = """
import numpy as np

def score(reference, test, labels):
    r, t = reference[0], test[0]
    r2, t2 = r.reshape(-1, r.shape[-1]), t.reshape(-1, t.shape[-1])
    out = {
        "agree": {"value": 100.0 * np.mean(r2.argmax(1) == t2.argmax(1)), "direction": "higher",
                  "unit": "%", "note": "argmax agreement"},
        "max_error": (np.float32(np.abs(r - t).max()), "lower"),
    }
    if labels is not None:
        out["labelled"] = (len(labels), "higher")
    return out
"""


def write(folder: Path, body: str, name: str = "metrics.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def custom(path: Path, func: str = "score") -> Custom:
    return make_task("custom", {"metric": f"{path}:{func}"})


def outputs(seed: int = 0, calls: int = 3, classes: int = 5) -> list[np.ndarray]:
    """One output stacked over calls, as `measure` gets it: (calls, batch 1, classes)."""
    return [np.random.default_rng(seed).normal(size=(calls, 1, classes)).astype(np.float32)]


CFG = {"name": "m", "model": {"onnx": "m.onnx"}, "data": {"calibration": "c.npy"}, "targets": ["x86-64"]}


def config(task: dict, **kw):
    return config_from_dict({**CFG, "task": task}, **kw)


# ---------------------------------------------------------------------------------------
# The function contract


def test_good_function_in_both_return_forms(tmp_path):
    task = custom(write(tmp_path, GOOD))
    ref = outputs()
    test = [ref[0].copy()]
    test[0][0, 0, :] *= -1  # one call's prediction changes (argmax becomes argmin)
    m = task.measure(ref, test)
    assert set(m) == {"agree", "max_error"}
    assert m["agree"] == {"value": pytest.approx(200 / 3), "direction": "higher", "unit": "%",
                          "note": "argmax agreement"}
    assert m["max_error"]["direction"] == "lower" and m["max_error"]["unit"] == "" and m["max_error"]["note"] == ""
    assert type(m["max_error"]["value"]) is float  # numpy scalars become plain floats (JSON)
    assert m["max_error"]["value"] == pytest.approx(float(np.abs(ref[0] - test[0]).max()))


def test_labels_reach_the_function_and_the_callers_arrays_stay_unchanged(tmp_path):
    path = write(tmp_path, """
        def score(reference, test, labels):
            n = len(labels)
            reference[0][...] = 0      # a careless function cannot corrupt the float reference
            labels[...] = -1
            return {"n": (n, "higher")}
    """)
    ref, y = outputs(), np.arange(3)
    kept = ref[0].copy()
    assert custom(path).measure(ref, [ref[0] + 1], y)["n"]["value"] == 3
    np.testing.assert_array_equal(ref[0], kept)
    np.testing.assert_array_equal(y, np.arange(3))


BAD_RETURNS = [
    ("[1.0, 'higher']", "a list"),
    ("None", "None"),
    ("{}", "an empty dict"),
    ("{'a': 0.5}", "'a': 0.5"),
    ("{'a': ('0.5', 'higher')}", "value '0.5' (a str, not a number)"),
    ("{'a': (True, 'higher')}", "value True"),
    ("{'a': (float('nan'), 'higher')}", "value nan (values must be finite numbers)"),
    ("{'a': (float('inf'), 'lower')}", "value inf"),
    ("{'a': (1.0, 'up')}", "direction 'up'"),
    ("{'a': (1.0, 'higher', '%')}", "'a': (1.0, 'higher', '%')"),
    ("{'a': {'value': 1.0}}", "'a' without 'direction'"),
    ("{'a': {'value': 1.0, 'directon': 'higher'}}", "unknown key(s) 'directon'"),
    ("{'a': {'value': 1.0, 'direction': 'higher', 'unit': 5}}", "unit 5"),
    ("{3: (1.0, 'higher')}", "metric name 3"),
]


@pytest.mark.parametrize("returned, named", BAD_RETURNS)
def test_a_bad_return_is_one_line_naming_the_function_and_the_expected_form(tmp_path, returned, named):
    task = custom(write(tmp_path, f"def score(reference, test, labels):\n    return {returned}\n"))
    with pytest.raises(ConfigError) as err:
        task.measure(outputs(), outputs())
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{tmp_path / 'metrics.py'}:score returned ")
    assert named in msg and "expected a dict of named metrics" in msg and "'higher' or 'lower'" in msg


def test_an_exception_in_the_function_is_one_line_naming_it(tmp_path):
    task = custom(write(tmp_path, """
        def score(reference, test, labels):
            raise ZeroDivisionError("no samples\\nat all")
    """))
    with pytest.raises(ConfigError) as err:
        task.measure(outputs(), outputs())
    assert str(err.value) == f"{tmp_path / 'metrics.py'}:score raised ZeroDivisionError: no samples at all"


def test_a_metric_must_keep_its_direction(tmp_path):
    task = custom(write(tmp_path, """
        calls = []
        def score(reference, test, labels):
            calls.append(1)
            return {"a": (1.0, "higher" if len(calls) == 1 else "lower")}
    """))
    task.prepare(outputs())
    with pytest.raises(ConfigError, match="'a' with direction 'lower', earlier 'higher'"):
        task.measure(outputs(), outputs())


def test_loading_names_what_is_wrong(tmp_path):
    good = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"missing\.py:score: the metric file .*missing\.py does not exist"):
        custom(tmp_path / "missing.py")
    with pytest.raises(ConfigError, match=r"metrics\.py:scor: metrics\.py defines no function 'scor' "
                                          r"\(it defines: score\)"):
        custom(good, "scor")
    with pytest.raises(ConfigError, match=r"importing broken\.py failed \(ModuleNotFoundError: No module named "
                                          r"'not_a_module_xyz'\)"):
        custom(write(tmp_path, "import not_a_module_xyz\n", "broken.py"))
    with pytest.raises(ConfigError, match=r"score\(reference\) cannot be called as score\(reference, test, labels\)"):
        custom(write(tmp_path, "def score(reference):\n    return {}\n", "one_arg.py"))
    with pytest.raises(ConfigError, match="'score' is a int, not a function"):
        custom(write(tmp_path, "score = 3\n", "not_fn.py"))
    with pytest.raises(ValueError, match="option 'metric' must be an absolute"):
        make_task("custom", {"metric": "metrics.py:score"})  # only a config resolves relative paths
    with pytest.raises(ValueError, match="'custom' runs a user function"):
        make_task("custom")


def test_the_file_is_imported_from_its_path_without_touching_sys_path(tmp_path):
    import sys

    before = list(sys.path)
    task = custom(write(tmp_path, """
        def score(reference, test, labels):
            return {"a": (1.0, "higher")}
    """))
    assert task.measure(outputs(), outputs())["a"]["value"] == 1.0
    assert sys.path == before and str(tmp_path) not in sys.path
    assert task.fn.__module__.startswith("_edgepack_metric_")  # a private name, not "metrics"
    assert "metrics" not in sys.modules or getattr(sys.modules["metrics"], "__file__", "") != str(task.where)


def test_a_device_never_runs_the_metric(tmp_path):
    sentinel = tmp_path / "ran"
    path = write(tmp_path, f"open({str(sentinel)!r}, 'w').close()\n"
                           "def score(r, t, y):\n    return {'a': (1, 'higher')}\n")
    for options in ({"metric": f"{path}:score"}, {"metric": "metrics.py:score"}, {}, None):
        task = make_task("custom", options, allow_custom=False)
        assert isinstance(task, CustomNotEvaluated) and task.measure(outputs(), outputs()) == {}
        assert "not evaluated here" in task.note and task.gates({"a": 1.0}) == []
    assert make_task("custom", {"metric": "metrics.py:score"}, allow_custom=False).metric_spec == "metrics.py:score"
    assert not sentinel.exists()
    assert make_task("classification", allow_custom=False).name == "classification"


# ---------------------------------------------------------------------------------------
# The config


def test_config_takes_a_metric_instead_of_a_name(tmp_path):
    for task in ({"metric": "metrics.py:score"}, {"name": "custom", "metric": "metrics.py:score"}):
        section = config(task).task
        assert section.name == "custom" and section.metric == "metrics.py:score"
    # at config time the function's metric names are unknown: any gate name is accepted
    assert config({"metric": "m.py:f", "gates": {"anything": 0.5}}).task.gates == {"anything": 0.5}


@pytest.mark.parametrize("task, named", [
    ({"name": "detection", "metric": "metrics.py:score"}, ["metric = 'metrics.py:score'", "name = 'detection'"]),
    ({"name": "custom"}, ['name "custom" needs metric']),
    ({"metric": "metrics:score"}, ["'metrics:score' is not 'path/to/file.py:function'"]),
    ({"metric": "metrics.py"}, ["'metrics.py' is not 'path/to/file.py:function'"]),
    ({"metric": "m.py:f", "options": {"k": 1}}, ["a custom metric takes no options (got 'k')"]),
    ({}, ["give name (classification", 'or metric = "path/to/file.py:function"']),
])
def test_config_refuses_in_toml_words(tmp_path, task, named):
    cfg = tmp_path / "edgepack.toml"
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') if not isinstance(v, dict) else
                     f"{k} = {{ {', '.join(f'{a} = {b}' for a, b in v.items())} }}" for k, v in task.items())
    cfg.write_text(f'name = "m"\ntargets = ["x86-64"]\n[model]\nonnx = "m.onnx"\n[data]\ncalibration = "c.npy"\n'
                   f"[task]\n{body}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value).replace('"', "'")
    assert "[task]" in msg and all(n.replace('"', "'") in msg for n in named), msg


def test_metric_path_is_relative_to_the_config_folder_and_recorded_as_written(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "metrics").mkdir(parents=True)
    write(project / "metrics", GOOD)
    cfg_path = project / "edgepack.toml"
    cfg_path.write_text('name = "m"\ntargets = ["x86-64"]\n[model]\nonnx = "m.onnx"\n[data]\ncalibration = "c.npy"\n'
                        '[task]\nmetric = "metrics/metrics.py:score"\ngates = { agree = 99.0 }\n')
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = load_config(cfg_path)
    assert cfg.task.metric_path(cfg.base_dir) == f"{project / 'metrics' / 'metrics.py'}:score"
    task = cfg.task.build(cfg.base_dir, cfg.words)
    assert isinstance(task, Custom)
    # what the manifest records holds no build-host path
    assert cfg.portable_dump()["task"]["metric"] == "metrics/metrics.py:score"
    assert cfg.task.spec(cfg.portable_path) == {"name": "custom", "options": {"metric": "metrics/metrics.py:score"}}
    assert str(tmp_path) not in str(cfg.portable_dump())
    assert config({"name": "regression"}).task.spec() == {"name": "regression", "options": {}}


def test_missing_file_or_function_is_a_config_error_naming_the_key(tmp_path):
    write(tmp_path, GOOD)
    for metric, named in (("nope.py:score", "nope.py does not exist"),
                          ("metrics.py:nope", "metrics.py defines no function 'nope' (it defines: score)")):
        cfg_path = tmp_path / "edgepack.toml"
        cfg_path.write_text('name = "m"\ntargets = ["x86-64"]\n[model]\nonnx = "m.onnx"\n[data]\n'
                            f'calibration = "c.npy"\n[task]\nmetric = "{metric}"\n')
        cfg = load_config(cfg_path)
        with pytest.raises(ConfigError) as err:
            cfg.task.build(cfg.base_dir, cfg.words)
        msg = str(err.value)
        assert msg.startswith(f"{cfg_path}: [task] metric: ") and named in msg and "\n" not in msg, msg


# ---------------------------------------------------------------------------------------
# Gates


def verdicts(task_gates: list[dict], measured: dict) -> dict[str, dict]:
    out = evaluate_gates({"task": task_gates}, metrics={"task": measured}, baseline={}, precision="int8",
                         ratios=None, latency=None, latency_is_device=False)
    return {v["gate"]: v for v in out}


def test_gates_by_custom_name_pass_and_fail_in_the_functions_direction(tmp_path):
    write(tmp_path, GOOD)
    section = config({"metric": "metrics.py:score", "gates": {"agree": 60.0, "max_error": 0.5, "typo": 1.0}},
                     base_dir=tmp_path).task
    with pytest.raises(ValueError, match="pass the task built by build"):
        section.task_gates()  # directions are not known before the function ran
    task = section.build(tmp_path)
    ref = outputs()
    task.prepare(ref)  # the float model against itself: names and directions
    gates = section.task_gates(task)
    assert [(g["metric"], g["direction"], g["threshold"]) for g in gates] == [
        ("agree", "higher", 60.0), ("max_error", "lower", 0.5), ("typo", "higher", 1.0)]

    faithful = task.measure(ref, [ref[0] + 0.01])
    v = verdicts(gates, faithful)
    assert v["task:agree"]["passed"] is True and v["task:max_error"]["passed"] is True
    assert v["task:max_error"]["direction"] == "lower"
    # a gated name the function does not return fails, and says why
    assert v["task:typo"]["passed"] is False and v["task:typo"]["value"] != v["task:typo"]["value"]
    assert "did not return it (it returned: agree, max_error)" in v["task:typo"]["note"]
    assert not all_passed(list(v.values()))

    broken = task.measure(ref, [ref[0] * -1.0])  # argmax flips, errors grow
    v = verdicts(gates[:2], broken)
    assert v["task:agree"]["passed"] is False and v["task:max_error"]["passed"] is False
    v = verdicts(gates[:2], faithful)
    assert all_passed(list(v.values()))
    # on a device the metric is not run: its gates read as not judged, which fails nothing
    v = verdicts(gates, make_task("custom", section.spec(), allow_custom=False).measure(ref, ref))
    assert {g["passed"] for g in v.values()} == {None} and all_passed(list(v.values()))


def test_a_custom_metric_has_no_default_gates(tmp_path):
    write(tmp_path, GOOD)
    section = config({"metric": "metrics.py:score"}, base_dir=tmp_path).task
    assert section.task_gates() == []
    task = section.build(tmp_path)
    task.prepare(outputs())
    assert task.default_gates() == [] and section.task_gates(task) == []


# ---------------------------------------------------------------------------------------
# A whole build


def test_a_build_reports_the_custom_metric_and_its_gate_fails_the_build(tmp_path, tiny_model, tiny_calib,
                                                                        tiny_eval, monkeypatch):
    from edgepack.api import build

    project = tmp_path / "project"
    project.mkdir()
    write(project, GOOD)
    cfg = project / "edgepack.toml"
    # int8 moves logits by ~1e-2; float artifacts reproduce them to ~1e-6
    cfg.write_text(f'name = "tiny"\ntargets = ["x86-64"]\nout = "dist"\n[model]\nonnx = "{tiny_model}"\n'
                   f'[data]\ncalibration = "{tiny_calib}"\nevaluation = "{tiny_eval}"\n'
                   '[verify]\nlatency_runs = 2\nwarmup_runs = 0\n'
                   '[task]\nmetric = "metrics.py:score"\ngates = { max_error = 0.001 }\n')
    monkeypatch.chdir(tmp_path)
    result = build(cfg)
    m = result.manifest
    assert m.model.task.name == "custom" and m.model.task.options == {"metric": "metrics.py:score"}
    assert m.config["task"]["metric"] == "metrics.py:score" and str(tmp_path) not in m.model_dump_json()
    t = m.targets["x86-64"]
    assert [(g.metric, g.direction, g.threshold) for g in t.gates.task] == [("max_error", "lower", 0.001)]
    f32, i8 = t.artifact("ort-float"), t.artifact("ort-int8")
    for a in (f32, i8):
        task = a.metrics.numerics[a.metrics.gate_numerics].task
        assert set(task) == {"agree", "max_error"} and task["agree"].unit == "%"
    assert {g.gate: g.passed for g in f32.metrics.gates}["task:max_error"] is True
    gate = {g.gate: g for g in i8.metrics.gates}["task:max_error"]
    assert gate.passed is False and gate.direction == "lower" and gate.value > 0.001
    assert not result.passed and any(f.gate == "task:max_error" for f in result.failures)
    # the accuracy search ran and could not hold a 0.001 max error in int8 without keeping the
    # model float (a size-gate failure, never preferred); every candidate, the 16x8 remedy
    # quantised with the best trial's (non-minmax) calibration included, was produced
    assert t.search is not None and t.search.runs[0].kind == "ort-int8"
    assert [tr.error for tr in t.search.trials] == [None] * len(t.search.trials)
    # the budget keeps room for the other number formats: the last trials are the remedies
    assert [tr.kind for tr in t.search.trials[-2:]] == ["ort-dynamic-int8", "ort-int16"]  # fastest first
    assert all("max_int8_size_ratio" not in t.search.trials[i].failed_gates
               for i in [t.search.runs[0].chosen or 0])
    assert "max_error" in (result.bundle / "report.md").read_text()
    # the device runner does not run the bundle's task spec: no custom numbers, gates not judged
    from edgepack.verification.device import verify_bundle

    run = verify_bundle(result.bundle, "x86-64", artifacts=["ort-int8"], runs=2, warmup=0)
    (a,) = run["targets"]["x86-64"]["artifacts"]
    assert a["metrics"]["task"] == {}
    assert {g["gate"]: g["passed"] for g in a["gates"]}["task:max_error"] is None
