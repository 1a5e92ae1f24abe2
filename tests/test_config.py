"""The config file: path resolution, validation, and the CLI/API surface around it."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest
from conftest import REPO, cli, explain, load_manifest, same_isa_target, write_toml

from edgepack.config import config_from_dict, load_config
from edgepack.errors import ConfigError


def _project(tmp_path) -> Path:
    """A self-contained project folder: model, data, a profile and a data entry point."""
    proj = tmp_path / "project"
    (proj / "data").mkdir(parents=True)
    models.tiny_onnx(proj / "model.onnx")
    np.save(proj / "data" / "calib.npy", models.tiny_inputs(16, seed=1))
    (proj / "data" / "feed.py").write_text(
        "import numpy as np\n"
        "def batches():\n"
        "    rng = np.random.default_rng(3)\n"
        "    for i in range(3):\n"
        "        yield rng.normal(size=(4, 3, 8, 8)).astype(np.float32), np.arange(4) + i\n"
    )
    text = (REPO / "targets" / f"{same_isa_target()}.toml").read_text()
    assert "max_int8_size_ratio = 1.25" in text
    text = text.replace("max_int8_size_ratio = 1.25", "")
    (proj / "profiles").mkdir()
    (proj / "profiles" / "edge-box.toml").write_text(text)
    return proj


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    proj = _project(tmp_path)
    cfg = load_config(write_toml(proj / "edgepack.toml", """
        name = "rel"
        out = "dist"
        targets = ["edge-box"]
        targets_dirs = ["profiles"]
        [model]
        onnx = "model.onnx"
        [data]
        calibration = "data/calib.npy"
        evaluation = "data/feed.py:batches"
    """))
    assert Path(cfg.model.onnx) == proj / "model.onnx"
    assert Path(cfg.out) == proj / "dist"
    assert cfg.data.calibration == str(proj / "data" / "calib.npy")
    assert cfg.data.evaluation == f"{proj / 'data' / 'feed.py'}:batches"
    assert [Path(p) for p in cfg.targets_dirs] == [proj / "profiles"]


def test_build_from_another_working_directory(tmp_path):
    """A config with relative paths builds the same wherever the command runs; the
    evaluation data comes from a file.py:function entry point."""
    proj = _project(tmp_path)
    cfg = write_toml(proj / "edgepack.toml", """
        name = "rel"
        out = "dist"
        targets = ["edge-box"]
        targets_dirs = ["profiles"]
        [model]
        onnx = "model.onnx"
        [data]
        calibration = "data/calib.npy"
        evaluation = "data/feed.py:batches"
        [verify]
        latency_runs = 2
    """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = cli("build", cfg, cwd=elsewhere)
    assert proc.returncode == 0, explain(proc)
    m = load_manifest(proj / "dist" / "rel-0.1.0")
    assert m["data"]["evaluation"]["labelled"] is True and m["data"]["evaluation"]["samples"] == 12
    assert list(m["targets"]) == ["edge-box"]
    assert list(elsewhere.iterdir()) == []


def test_build_with_npz_keys_and_image_folder(tmp_path):
    """Calibration from an .npz with custom keys, evaluation from a folder of PNGs with
    class sub-folders and declared preprocessing."""
    from PIL import Image

    proj = _project(tmp_path)
    rng = np.random.default_rng(5)
    np.savez(proj / "data" / "calib.npz", pixels=models.tiny_inputs(16, seed=7), target=np.arange(16) % 3)
    n = 0
    for cls in ("a", "b", "c"):
        (proj / "data" / "images" / cls).mkdir(parents=True)
        for i in range(3):
            px = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
            Image.fromarray(px, "RGB").save(proj / "data" / "images" / cls / f"{i}.png")
            n += 1
    cfg = write_toml(proj / "edgepack.toml", """
        name = "imgs"
        out = "dist"
        targets = ["edge-box"]
        targets_dirs = ["profiles"]
        [model]
        onnx = "model.onnx"
        [data]
        calibration = "data/calib.npz"
        evaluation = "data/images"
        x_key = "pixels"
        y_key = "target"
        [data.preprocess]
        size = [8, 8]
        mean = [0.5, 0.5, 0.5]
        std = [0.25, 0.25, 0.25]
        [verify]
        latency_runs = 2
    """)
    proc = cli("build", cfg)
    assert proc.returncode == 0, explain(proc)
    bundle = proj / "dist" / "imgs-0.1.0"
    m = load_manifest(bundle)
    assert m["data"]["calibration"]["samples"] == 16
    assert m["data"]["evaluation"] == {**m["data"]["evaluation"], "samples": n, "labelled": True}
    with np.load(bundle / "data" / "eval.npz") as z:
        assert z["in_0"].shape == (n, 1, 3, 8, 8)  # one entry per model call (batch 1)
        assert z["y"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        first = np.asarray(Image.open(proj / "data" / "images" / "a" / "0.png").resize((8, 8), Image.BILINEAR),
                           np.float32)
        np.testing.assert_allclose(z["in_0"][0, 0], ((first / 255 - 0.5) / 0.25).transpose(2, 0, 1), atol=1e-5)


def test_target_profile_path_in_config_is_relative_to_the_config(tmp_path):
    """`targets = ["profiles/edge-box.toml"]` names a file next to the config, like every
    other path in it (README: "Relative paths are resolved against the config file's folder")."""
    proj = _project(tmp_path)
    cfg = write_toml(proj / "edgepack.toml", """
        name = "relprofile"
        out = "dist"
        targets = ["profiles/edge-box.toml"]
        [model]
        onnx = "model.onnx"
        [data]
        calibration = "data/calib.npy"
        [verify]
        latency_runs = 2
    """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = cli("build", cfg, cwd=elsewhere)
    assert proc.returncode == 0, explain(proc)
    assert list(load_manifest(proj / "dist" / "relprofile-0.1.0")["targets"]) == ["edge-box"]


def test_duplicate_target_is_refused(tmp_path, tiny_model, tiny_calib):
    out = tmp_path / "out"
    proc = cli("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "rpi4,rpi4", "--out", out)
    assert proc.returncode == 2, explain(proc)
    assert "rpi4" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("data, field", [
    ({"model": {"onnx": "m.onnx", "torch": "m.py:f"}}, "model"),
    ({"model": {"torch": "m.py"}}, "model"),
    ({"name": "has space"}, "name"),
    ({"targets": []}, "targets"),
    ({"model": {"onnx": "m.onnx", "input_shape": [1, 0, 8, 8]}}, "model"),
])
def test_config_validation_names_the_field(data, field):
    base = {"name": "ok", "model": {"onnx": "m.onnx"}, "data": {"calibration": "c.npy"}, "targets": ["rpi4"]}
    base.update(data)
    with pytest.raises(ConfigError) as e:
        config_from_dict(base, source="test.toml")
    assert "test.toml" in str(e.value) and f"field '{field}" in str(e.value)


def test_config_hash_is_stable_and_sensitive():
    base = {"name": "ok", "model": {"onnx": "m.onnx"}, "data": {"calibration": "c.npy"}, "targets": ["rpi4"]}
    a, b = config_from_dict(dict(base)), config_from_dict(dict(base))
    c = config_from_dict({**base, "targets": ["rpi5"]})
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_public_api_is_lazy_and_complete():
    import edgepack

    for name in ("build", "verify", "merge", "inspect"):
        assert callable(getattr(edgepack, name)), name
        assert getattr(edgepack, name).__module__ == "edgepack.api"
    assert edgepack.Manifest.__name__ == "Manifest" and edgepack.BuildConfig.__name__ == "BuildConfig"
    assert "rpi4" in edgepack.load_targets()
    assert issubclass(edgepack.EdgepackError, Exception)
    with pytest.raises(AttributeError):
        edgepack.no_such_thing  # noqa: B018


def test_build_usage_errors_exit_2(tmp_path, tiny_model):
    proc = cli("build", "--onnx", tiny_model, "--targets", "rpi4")  # no --calib
    assert proc.returncode == 2, explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
