"""Shared fixtures: small models, data files, and the bundles that several tests read.

Expensive things (training/exporting the unseen CNN, building bundles) are session-scoped
and built once. Tests that modify a bundle copy it first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


# ---------------------------------------------------------------------------------------
# Subprocess helpers


def base_env(**extra: str) -> dict:
    """The environment CLI subprocesses run in: a fixed 80-column terminal width so rich's
    layout does not depend on whoever runs the tests, and no stray targets path."""
    env = dict(os.environ)
    env.pop("EDGEPACK_TARGETS_PATH", None)
    env.pop("EDGEPACK_EMULATED_CPU", None)
    env["COLUMNS"] = "80"
    env["PYTHONIOENCODING"] = "utf-8"
    # let each subprocess reuse compiled bytecode (a machine that sets this recompiles onnx,
    # onnxruntime.quantization, ... on every `edgepack` call: about 3 s each)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def run(args: list[str], *, cwd: Path | None = None, env: dict | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env or base_env(), capture_output=True, text=True, timeout=timeout)


def cli(*args, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`edgepack ARGS...` in a subprocess (the same entry point as the console script)."""
    return run([PY, "-m", "edgepack", *map(str, args)], cwd=cwd, env=env, timeout=timeout)


def device(*args, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m edgepack.device ARGS...` in a subprocess."""
    return run([PY, "-m", "edgepack.device", *map(str, args)], cwd=cwd, env=env)


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"


def write_toml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# ---------------------------------------------------------------------------------------
# Bundle helpers


def load_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def failure_texts(manifest: dict) -> list[str]:
    """The manifest's failures as "target/artifact: reason" lines (what the report lists)."""
    return [f"{'/'.join(p for p in (f.get('target'), f.get('artifact')) if p) or 'bundle'}: {f['reason']}"
            for f in manifest["failures"]]


def artifact(manifest: dict, target: str, kind: str) -> dict:
    (a,) = [a for a in manifest["targets"][target]["artifacts"] if a["kind"] == kind]
    return a


def file_entries(obj) -> list[dict]:
    """Every {"path", "sha256", "size_bytes"} entry anywhere in a manifest."""
    found = []
    if isinstance(obj, dict):
        if {"path", "sha256", "size_bytes"} <= obj.keys():
            found.append(obj)
        for v in obj.values():
            found += file_entries(v)
    elif isinstance(obj, list):
        for v in obj:
            found += file_entries(v)
    return found


def ort_session(path: Path, *, reference: bool = False, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    if reference:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_batches(sess, x: np.ndarray) -> np.ndarray:
    """First output for all of x, run in chunks of the session's static batch size."""
    inp = sess.get_inputs()[0]
    b = inp.shape[0] if isinstance(inp.shape[0], int) else len(x)
    outs = [sess.run(None, {inp.name: x[i : i + b]})[0] for i in range(0, len(x) - b + 1, b)]
    return np.concatenate(outs)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(100.0 * np.mean(logits.argmax(1) == labels[: len(logits)]))


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = np.sum((ref - test.astype(np.float64)) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref**2) / noise))


def same_isa_target() -> str:
    """A shipped profile with the host's ISA (latency gates are judged only there)."""
    from edgepack.targets import host_arch

    return {"x86_64": "x86-64", "aarch64": "rpi5"}[host_arch()]


def foreign_isa_target() -> str:
    from edgepack.targets import host_arch

    return {"x86_64": "rpi4", "aarch64": "x86-64"}[host_arch()]


# ---------------------------------------------------------------------------------------
# Small ONNX models and data


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_dir) -> Path:
    return models.tiny_onnx(model_dir / "tiny.onnx", batch=1)


@pytest.fixture(scope="session")
def tiny_bn_model(model_dir) -> Path:
    return models.tiny_onnx(model_dir / "tiny_bn.onnx", batch=1, bn=True)


@pytest.fixture(scope="session")
def tiny_dynamic_model(model_dir) -> Path:
    return models.tiny_onnx(model_dir / "tiny_dyn.onnx", batch="N", bn=True)


@pytest.fixture(scope="session")
def tiny_batch4_model(model_dir) -> Path:
    return models.tiny_onnx(model_dir / "tiny_b4.onnx", batch=4)


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory, tiny_model, tiny_calib) -> Path:
    """A real bundle of the tiny model (built in-process, x86-64 only) that tests copy beside
    their output as the one a build must keep or replace."""
    from edgepack.api import build

    out = tmp_path_factory.mktemp("old")
    result = build({"name": "tiny", "model": {"onnx": str(tiny_model)}, "data": {"calibration": str(tiny_calib)},
                    "targets": ["x86-64"], "out": str(out), "verify": {"latency_runs": 2}})
    assert result.bundle == out / "tiny-0.1.0"
    return result.bundle


@pytest.fixture(scope="session")
def tiny_calib(model_dir) -> Path:
    p = model_dir / "tiny_calib.npy"
    np.save(p, models.tiny_inputs(32, seed=1))
    return p


@pytest.fixture(scope="session")
def tiny_eval(model_dir) -> Path:
    p = model_dir / "tiny_eval.npy"
    np.save(p, models.tiny_inputs(24, seed=2))
    return p


@pytest.fixture(scope="session")
def tiny_float_clean(tiny_model):
    """The tiny model after edgepack's cleaning, as an ONNX file."""
    import onnx

    from edgepack.stages.graph import clean_float_graph, load_onnx

    out = tiny_model.with_name("tiny.clean.onnx")
    onnx.save(clean_float_graph(load_onnx(tiny_model), str(tiny_model)), str(out))
    return out


@pytest.fixture
def local_profile(tmp_path) -> Path:
    """A copy of the same-ISA shipped profile as a file of the user's own (`--targets PATH`),
    gates included: the int8 size gate judges against the model's theoretical int8 size, so
    the tiny test models (under 40 weights per output channel) pass it like large ones."""
    src = REPO / "targets" / f"{same_isa_target()}.toml"
    assert "max_int8_size_ratio = 1.25" in src.read_text(), f"{src} changed: update this fixture"
    p = tmp_path / "edge-local.toml"
    p.write_text(src.read_text())
    return p


# ---------------------------------------------------------------------------------------
# The unseen CNN (digits upsampled to 16x16) and its bundles


@dataclass
class Digits16:
    x_calib: np.ndarray
    y_calib: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    calib_npy: Path
    eval_npz: Path
    eval_unlabelled_npy: Path


@pytest.fixture(scope="session")
def digits16(tmp_path_factory) -> Digits16:
    d = tmp_path_factory.mktemp("digits16")
    _, (xc, yc), (xe, ye) = models.digits16()
    np.save(d / "calib.npy", xc)
    np.savez(d / "eval.npz", x=xe, y=ye)
    np.save(d / "eval_x.npy", xe)
    return Digits16(xc, yc, xe, ye, d / "calib.npy", d / "eval.npz", d / "eval_x.npy")


@pytest.fixture(scope="session")
def unseen_onnx(tmp_path_factory) -> dict:
    """The unseen CNN, trained for a few seconds and exported with the dynamo exporter."""
    d = tmp_path_factory.mktemp("unseen")
    return models.export_unseen_in_subprocess(d / "unseen_cnn.onnx")


@dataclass
class Built:
    proc: subprocess.CompletedProcess
    bundle: Path
    out: Path

    @property
    def manifest(self) -> dict:
        return load_manifest(self.bundle)


@pytest.fixture(scope="session")
def unseen_bundle(tmp_path_factory, unseen_onnx, digits16) -> Built:
    """`edgepack build --onnx ... --targets rpi4,x86-64` on the unseen CNN, labelled eval."""
    out = tmp_path_factory.mktemp("unseen_dist")
    proc = cli("build", "--onnx", unseen_onnx["path"], "--calib", digits16.calib_npy, "--eval", digits16.eval_npz,
               "--targets", "rpi4,x86-64", "--out", out, "--latency-runs", "5")
    return Built(proc, out / "unseen_cnn-0.1.0", out)


@pytest.fixture(scope="session")
def unseen_unlabelled_bundle(tmp_path_factory, unseen_onnx, digits16) -> Built:
    """The same model with evaluation data that has no labels."""
    out = tmp_path_factory.mktemp("unseen_unlabelled_dist")
    proc = cli("build", "--onnx", unseen_onnx["path"], "--calib", digits16.calib_npy,
               "--eval", digits16.eval_unlabelled_npy, "--targets", "rpi4,x86-64", "--out", out,
               "--name", "unlabelled", "--latency-runs", "5")
    return Built(proc, out / "unlabelled-0.1.0", out)


@pytest.fixture(scope="session")
def digits_example(tmp_path_factory):
    """The shipped example built through the Python API into a temporary `out`."""
    from edgepack.config import load_config
    from edgepack.pipeline import build

    out = tmp_path_factory.mktemp("digits_dist")
    cfg = load_config(REPO / "examples" / "digits" / "edgepack.toml")
    cfg = cfg.model_copy(update={"out": out})
    return build(cfg)


# ---------------------------------------------------------------------------------------
# An interpreter environment in which torch cannot be imported


BLOCKER = '''
import atexit, json, os, sys

class _BlockTorch:
    """Refuse torch (and its sub-modules) the way a device without torch would."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "torchaudio"):
            raise ImportError(f"No module named {name!r} (blocked by the edgepack test environment)")
        return None

sys.meta_path.insert(0, _BlockTorch())

_out = os.environ.get("EDGEPACK_TEST_MODULES_OUT")
if _out:
    atexit.register(lambda: open(_out, "w").write(json.dumps(sorted(sys.modules))))
'''


@pytest.fixture(scope="session")
def torchless_env(tmp_path_factory):
    """Returns a function making an env whose interpreter cannot import torch; when given a
    path, the interpreter writes its final sys.modules there at exit."""
    d = tmp_path_factory.mktemp("torchless")
    (d / "sitecustomize.py").write_text(BLOCKER)

    def make(modules_out: Path | None = None) -> dict:
        env = base_env()
        env["PYTHONPATH"] = os.pathsep.join([str(d)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        if modules_out is not None:
            env["EDGEPACK_TEST_MODULES_OUT"] = str(modules_out)
        return env

    return make


@pytest.fixture
def bundle_copy(tmp_path):
    """Copy a bundle so a test may modify it."""

    def make(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return make
