"""Input-validation holes a red team found: each is refused with exit 2 and one line on stderr
naming the file and the field (or option) and saying what was expected, without a traceback.

Non-finite numbers in configs and profiles, target folders that do not exist, absurd thread and
run counts, device-runner options, undecodable or deeply nested TOML and JSON, damaged .ort
files, and special files (FIFOs) in an image folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, cli, device, explain, write_toml

from edgepack.errors import DataError, ModelError


def one_line_refusal(proc, *needles) -> str:
    """The single stderr line of a refusal (exit 2, no traceback), checked to name `needles`."""
    assert proc.returncode == 2, explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, explain(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr:\n{explain(proc)}"
    assert lines[0].startswith("error: "), explain(proc)
    assert "unexpected" not in lines[0], explain(proc)
    for n in needles:
        assert n in lines[0], f"{n!r} not named in: {lines[0]}"
    return lines[0]


def no_bundle(out):
    leftovers = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert leftovers == [], f"left in {out}: {leftovers}"


def config(tmp_path, tiny_model, tiny_calib, tables: str = "", *, targets: str = '["x86-64"]', top: str = ""):
    """edgepack.toml for the tiny model: `top` goes before the first table, `tables` after the
    others ([search] max_trials = 0 unless `tables` has its own [search])."""
    search = "" if "[search]" in tables else "[search]\nmax_trials = 0\n"
    return write_toml(tmp_path / "edgepack.toml", f"""
        name = "t"
        out = "out"
        targets = {targets}
        {top}
        [model]
        onnx = "{tiny_model}"
        [data]
        calibration = "{tiny_calib}"
        """ + search + tables)


def profile_text(**replace: str) -> str:
    """The shipped x86-64 profile with lines replaced (`threads = 4` -> `threads = 9...`)."""
    text = (REPO / "targets" / "x86-64.toml").read_text()
    for old, new in replace.items():
        assert old in text, f"{old!r} not in the x86-64 profile: update this test"
        text = text.replace(old, new)
    return text


# ---------------------------------------------------------------------------------------
# 1. non-finite numbers


@pytest.mark.parametrize("extra, field", [
    ("[gates]\nmin_sqnr_db = nan\n", "[gates] min_sqnr_db"),
    ("[gates]\nmax_latency_ms = inf\n", "[gates] max_latency_ms"),
    ("[gates]\nmax_accuracy_drop = -inf\n", "[gates] max_accuracy_drop"),
    ("[search]\nmax_seconds = inf\n", "[search] max_seconds"),
    ("[task]\nname = \"classification\"\n[task.gates]\naccuracy = nan\n", "[task]"),
    ("[task]\nname = \"detection\"\n[task.options]\niou_threshold = nan\n", "iou_threshold"),
], ids=["sqnr-nan", "latency-inf", "drop-minus-inf", "search-seconds-inf", "task-gate-nan", "task-option-nan"])
def test_non_finite_config_numbers_are_refused(tmp_path, tiny_model, tiny_calib, extra, field):
    cfg = config(tmp_path, tiny_model, tiny_calib, extra)
    line = one_line_refusal(cli("build", cfg, cwd=tmp_path), "edgepack.toml", field)
    assert "finite" in line
    no_bundle(tmp_path / "out")


@pytest.mark.parametrize("old, new, field", [
    ("min_sqnr_db = 30.0", "min_sqnr_db = nan", "[gates] min_sqnr_db"),
    ("max_int8_size_ratio = 1.25", "max_int8_size_ratio = inf", "[gates] max_int8_size_ratio"),
])
def test_non_finite_profile_numbers_are_refused(tmp_path, tiny_model, tiny_calib, old, new, field):
    (tmp_path / "p.toml").write_text(profile_text(**{old: new}))
    cfg = config(tmp_path, tiny_model, tiny_calib, targets='["p.toml"]')
    line = one_line_refusal(cli("build", cfg, cwd=tmp_path), "p.toml", field)
    assert "finite" in line


# ---------------------------------------------------------------------------------------
# 2. target folders that do not exist, absurd counts


@pytest.mark.parametrize("where", ["missing", "file"])
def test_targets_dirs_must_be_existing_folders(tmp_path, tiny_model, tiny_calib, where):
    if where == "file":
        (tmp_path / "profiles").write_text("not a folder")
        entry, needle = "profiles", "is not a folder"
    else:
        entry, needle = "no/such/dir", "does not exist"  # shown as the config file has it
    cfg = config(tmp_path, tiny_model, tiny_calib, top=f'targets_dirs = ["{entry}"]')
    line = one_line_refusal(cli("build", cfg, cwd=tmp_path), "edgepack.toml", "targets_dirs", entry, needle)
    assert "expected a folder" in line
    no_bundle(tmp_path / "out")


def test_an_existing_targets_dir_is_accepted(tmp_path):
    from edgepack.config import config_from_dict

    (tmp_path / "profiles").mkdir()
    cfg = config_from_dict({"name": "t", "model": {"onnx": "m.onnx"}, "data": {"calibration": "c.npy"},
                            "targets": ["x86-64"], "targets_dirs": [str(tmp_path / "profiles")]})
    assert cfg.targets_dirs == [tmp_path / "profiles"]


@pytest.mark.parametrize("old, new, field", [
    ("threads = ", "threads = 100000000000000000 #", "threads"),
    ("threads = ", "threads = 1025 #", "threads"),
    ("cores = ", "cores = 100000 #", "[cpu] cores"),
])
def test_profile_counts_are_bounded(tmp_path, tiny_model, tiny_calib, old, new, field):
    (tmp_path / "p.toml").write_text(profile_text(**{old: new}))
    cfg = config(tmp_path, tiny_model, tiny_calib, targets='["p.toml"]')
    line = one_line_refusal(cli("build", cfg, cwd=tmp_path), "p.toml", field)
    assert "1024" in line
    no_bundle(tmp_path / "out")


@pytest.mark.parametrize("extra, field, bound", [
    ("[verify]\nlatency_runs = 1000000000\n", "[verify] latency_runs", "100000"),
    ("[verify]\nwarmup_runs = 1000000000\n", "[verify] warmup_runs", "10000"),
    ("[verify]\ngolden_samples = 1000000000\n", "[verify] golden_samples", "10000"),
    ("[verify]\nhost_threads = 100000000000000000\n", "[verify] host_threads", "1024"),
    ("[search]\nmax_trials = 1000\n", "[search] max_trials", "100"),
    ("[search]\nmax_seconds = 100000000\n", "[search] max_seconds", "604800"),
])
def test_config_counts_are_bounded(tmp_path, tiny_model, tiny_calib, extra, field, bound):
    cfg = config(tmp_path, tiny_model, tiny_calib, extra)
    line = one_line_refusal(cli("build", cfg, cwd=tmp_path), "edgepack.toml", field)
    assert bound in line
    no_bundle(tmp_path / "out")


def test_flags_are_bounded_too(tmp_path, tiny_model, tiny_calib):
    out = tmp_path / "out"
    proc = cli("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "x86-64", "--out", out,
               "--latency-runs", "1000000000", "--search-trials", "0")
    one_line_refusal(proc, "--latency-runs", "100000")
    no_bundle(out)


# ---------------------------------------------------------------------------------------
# 3. the device runner's options


@pytest.mark.parametrize("args, option, expected", [
    (["--threads", "-4"], "--threads", "from 1 to 1024"),
    (["--threads", "0"], "--threads", "from 1 to 1024"),
    (["--threads", "99999999999999999999"], "--threads", "from 1 to 1024"),
    (["--threads", "four"], "--threads", "from 1 to 1024"),
    (["--runs", "0"], "--runs", "from 1 to"),
    (["--runs", "-1"], "--runs", "from 1 to"),
    (["--runs", "99999999999999999999"], "--runs", "from 1 to"),
    (["--warmup", "-1"], "--warmup", "from 0 to"),
    (["--warmup", "1.5"], "--warmup", "from 0 to"),
])
def test_device_runner_options_are_validated(tmp_path, args, option, expected):
    """Refused while parsing, before the bundle is read (so none is needed here)."""
    proc = device("verify", tmp_path / "bundle", *args)
    line = one_line_refusal(proc, option, expected, args[1])
    assert line.startswith(f"error: {option}: expected an integer"), line
    assert "usage:" not in proc.stderr


def test_device_runner_usage_errors_are_one_line(tmp_path):
    one_line_refusal(device("verify", tmp_path / "bundle", "--bogus"), "--bogus")
    one_line_refusal(device(), "command")


def test_device_runner_valid_options_reach_the_bundle(tmp_path):
    """In-range values parse: the refusal is then about the (missing) bundle."""
    proc = device("verify", tmp_path / "bundle", "--threads", "1024", "--runs", "1", "--warmup", "0")
    one_line_refusal(proc, str(tmp_path / "bundle"), "no manifest.json")


# ---------------------------------------------------------------------------------------
# 4. undecodable and deeply nested TOML and JSON


def test_binary_target_profile_is_named(tmp_path, tiny_model, tiny_calib):
    (tmp_path / "p.toml").write_bytes(b"\x00\x8c\xff\xfe binary \x80\x81" * 50)
    cfg = config(tmp_path, tiny_model, tiny_calib, targets='["p.toml"]')
    one_line_refusal(cli("build", cfg, cwd=tmp_path), "p.toml", "not a UTF-8 TOML file")
    no_bundle(tmp_path / "out")


def test_binary_profile_in_a_targets_dir_is_named(tmp_path, tiny_model, tiny_calib):
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "mine.toml").write_bytes(b"\x8c\xff\x00" * 100)
    cfg = config(tmp_path, tiny_model, tiny_calib, top='targets_dirs = ["profiles"]', targets='["mine"]')
    one_line_refusal(cli("build", cfg, cwd=tmp_path), "mine.toml", "not a UTF-8 TOML file")


@pytest.mark.parametrize("depth", [5000, 300])
def test_deeply_nested_config_is_refused(tmp_path, tiny_model, tiny_calib, depth):
    cfg = config(tmp_path, tiny_model, tiny_calib)
    cfg.write_text(f"deep = {'[' * depth}{']' * depth}\n" + cfg.read_text())
    one_line_refusal(cli("build", cfg, cwd=tmp_path), "edgepack.toml", "nest too deeply to be a config")
    no_bundle(tmp_path / "out")


def test_deeply_nested_profile_is_refused(tmp_path, tiny_model, tiny_calib):
    (tmp_path / "p.toml").write_text(f"deep = {'[' * 5000}{']' * 5000}\n" + profile_text())
    cfg = config(tmp_path, tiny_model, tiny_calib, targets='["p.toml"]')
    one_line_refusal(cli("build", cfg, cwd=tmp_path), "p.toml", "nest too deeply to be a target profile")


@pytest.mark.parametrize("depth", [100_000, 500])
def test_deeply_nested_device_result_is_refused(tmp_path, depth):
    res = tmp_path / "res.json"
    res.write_text('{"a": ' + "[" * depth + "]" * depth + "}")
    one_line_refusal(cli("merge", tmp_path / "bundle", res), "res.json",
                     "nests too deeply to be a device result")


def test_deeply_nested_manifest_is_refused(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    one_line_refusal(device("verify", bundle, "--runs", "1"), "manifest.json",
                     "nests too deeply to be a bundle manifest")


def test_read_json_keeps_reading_ordinary_documents(tmp_path):
    from edgepack.manifest.jsonio import DEVICE_RESULT_SCHEMA, read_json

    p = tmp_path / "r.json"
    p.write_text('{"schema": "%s", "x": {"y": [[1, "inf"]]}}' % DEVICE_RESULT_SCHEMA)
    assert read_json(p, DEVICE_RESULT_SCHEMA)["x"]["y"] == [[1, float("inf")]]


# ---------------------------------------------------------------------------------------
# 5. damaged .ort files


@pytest.fixture(scope="module")
def real_ort(tmp_path_factory, tiny_float_clean):
    from edgepack.stages.emit.ort import convert_to_ort
    from edgepack.targets import resolve_target

    out = tmp_path_factory.mktemp("ort")
    path, _ = convert_to_ort(tiny_float_clean, out, "model.float32", resolve_target("rpi4").ort)
    assert path.suffix == ".ort" and path.read_bytes()[4:8] == b"ORTM"
    return path


def test_a_real_ort_file_is_inspected(real_ort):
    proc = cli("inspect", real_ort)
    assert proc.returncode == 0, explain(proc)
    assert "ORT flatbuffer" in proc.stdout


@pytest.mark.parametrize("cut", [8, 64, 300, -200])
@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_truncated_ort_file_is_named(tmp_path, real_ort, cut, as_json):
    data = real_ort.read_bytes()
    bad = tmp_path / "x.ort"
    bad.write_bytes(data[:cut])
    proc = cli("inspect", bad, *(["--json"] if as_json else []))
    one_line_refusal(proc, "x.ort", "not a readable ORT-format model (truncated or damaged)")


def test_fake_ort_header_is_named(tmp_path):
    bad = tmp_path / "x.ort"
    bad.write_bytes(b"\xff\xff\xff\x7fORTM" + np.random.default_rng(3).integers(0, 256, 200, np.uint8).tobytes())
    one_line_refusal(cli("inspect", bad), "x.ort", "not a readable ORT-format model")


def test_weight_bytes_of_a_damaged_ort_is_a_model_error(tmp_path, real_ort):
    from edgepack.inspection import weight_bytes

    bad = tmp_path / "x.ort"
    bad.write_bytes(real_ort.read_bytes()[:300])
    with pytest.raises(ModelError, match="x.ort: not a readable ORT-format model"):
        weight_bytes(bad)


# ---------------------------------------------------------------------------------------
# 6. special files in data folders


def _image_folder(root, classes=("a", "b"), n=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(root / c / f"{i}.png")
    return root


def test_fifo_in_an_image_folder_is_refused_by_build(tmp_path, tiny_model):
    imgs = _image_folder(tmp_path / "imgs")
    os.mkfifo(imgs / "a" / "f.png")
    cfg = write_toml(tmp_path / "edgepack.toml", f"""
        name = "img"
        out = "out"
        targets = ["x86-64"]
        [model]
        onnx = "{tiny_model}"
        [data]
        calibration = "imgs"
        [data.preprocess]
        size = [8, 8]
        [verify]
        latency_runs = 2
        [search]
        max_trials = 0
        """)
    proc = cli("build", cfg, cwd=tmp_path, timeout=240)  # a hang would end in TimeoutExpired
    one_line_refusal(proc, "f.png", "is not a regular file", "FIFO")
    no_bundle(tmp_path / "out")


def _load(spec, **kw):
    from edgepack.config import Preprocess
    from edgepack.stages.data import load_dataset
    from edgepack.stages.graph import TensorSpec

    return load_dataset(str(spec), TensorSpec("input", (1, 3, 8, 8), "float32"), preprocess=Preprocess(size=(8, 8)),
                        **kw)


def test_fifo_in_a_flat_image_folder_is_refused(tmp_path):
    imgs = _image_folder(tmp_path / "imgs", classes=("a",))
    flat = tmp_path / "flat"
    shutil.copytree(imgs / "a", flat)
    os.mkfifo(flat / "z.jpg")
    with pytest.raises(DataError, match=r"z\.jpg is not a regular file but a FIFO"):
        _load(flat)


def test_symlink_to_a_fifo_is_refused_and_to_an_image_followed(tmp_path):
    imgs = _image_folder(tmp_path / "imgs")
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "pipe", imgs / "b" / "link.png")
    with pytest.raises(DataError, match=r"link\.png is not a regular file"):
        _load(imgs)
    (imgs / "b" / "link.png").unlink()
    os.symlink(imgs / "a" / "0.png", imgs / "b" / "linked.png")  # symlinks to images: read as before
    ds = _load(imgs)
    assert len(ds) == 7 and ds.class_names == ["a", "b"]


def test_fifo_ignored_when_not_an_image_name(tmp_path):
    imgs = _image_folder(tmp_path / "imgs")
    os.mkfifo(imgs / "a" / "notes")  # never read: not an image suffix
    assert len(_load(imgs)) == 6


def test_fifo_as_npy_data_is_refused(tmp_path):
    os.mkfifo(tmp_path / "calib.npy")
    with pytest.raises(DataError, match=r"calib\.npy is not a regular file but a FIFO"):
        _load(tmp_path / "calib.npy")


def test_a_fifo_as_the_calibration_file_is_refused_without_blocking(tmp_path, tiny_model):
    """A named pipe given as --calib (a .npz name) is refused before anything opens it: opening
    a FIFO for reading would wait for a writer forever."""
    fifo = tmp_path / "calib.npz"
    os.mkfifo(fifo)
    proc = cli("build", "--onnx", tiny_model, "--calib", fifo, "--targets", "x86-64", "--out", tmp_path / "out",
               "--search-trials", "0", timeout=120)
    assert proc.returncode == 2, explain(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "calib.npz" in lines[0] and "not a regular file" in lines[0], explain(proc)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, needle", [(["--runs", "0"], "--runs"),
                                          (["--threads", "99999999999999999999"], "--threads"),
                                          (["--no-such-option"], "--no-such-option")])
def test_cli_usage_errors_are_one_line(tmp_path, args, needle):
    """An option out of its range or unknown is one `error:` line naming the command and the
    option, exit 2 (click's own rendering was a usage line and a boxed message)."""
    proc = cli("verify", tmp_path, *args)
    assert proc.returncode == 2, explain(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0] and "verify" in lines[0], \
        explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("what", ["config", "result", "key"])
def test_a_fifo_given_as_a_file_argument_is_refused_without_blocking(tmp_path, old_bundle, what):
    """A named pipe where a config, a device result or a key file belongs: one line naming it,
    exit 2 (reading it would wait for a writer forever); the bundle is left as it was."""
    bundle = Path(shutil.copytree(old_bundle, tmp_path / old_bundle.name))
    before = (bundle / "manifest.json").read_bytes()
    fifo = tmp_path / {"config": "edgepack.toml", "result": "res.json", "key": "release.key"}[what]
    os.mkfifo(fifo)
    args = {"config": ["build", fifo], "result": ["merge", bundle, fifo], "key": ["sign", bundle, fifo]}[what]
    proc = cli(*args, timeout=120)
    assert proc.returncode == 2, explain(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, explain(proc)
    assert fifo.name in lines[0] and "not a regular file" in lines[0], explain(proc)
    assert (bundle / "manifest.json").read_bytes() == before


def test_a_fifo_as_the_model_is_named_as_such(tmp_path, tiny_calib):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    proc = cli("build", "--onnx", fifo, "--calib", tiny_calib, "--targets", "x86-64", "--out", tmp_path / "out",
               timeout=120)
    assert proc.returncode == 2, explain(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "model.onnx" in lines[0] and "not a regular file" in lines[0], explain(proc)
