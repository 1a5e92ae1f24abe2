"""Device truth: ARM-exact numerics from this x86 host (qemu-user + an arm64 userland with
the profile's pinned runtimes), merging device results, and the runner where runtimes
are missing. These run the real emulator; CI installs qemu-user-static."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, artifact, cli, load_manifest

from edgepack.targets import TargetProfile
from edgepack.verification.emulate import prepare_userland

# Runs inside the emulated userland with the aarch64 runtimes directly — no edgepack code —
# so it is an independent measurement of what the device computes.
INDEPENDENT = textwrap.dedent('''
    import json, sys
    import numpy as np
    bundle, target = sys.argv[1], sys.argv[2]
    m = json.load(open(bundle + "/manifest.json"))
    data = np.load(bundle + "/data/eval.npz"); y = data["y"]
    x = data["in_0"].reshape(-1, *data["in_0"].shape[2:])  # calls of batch 1 -> samples
    out = {}
    for a in m["targets"][target]["artifacts"]:
        path = bundle + "/" + a["path"]
        perm = a["layout"]["inputs"][0]["perm"]
        logits = []
        if path.endswith(".ort"):
            import onnxruntime as ort
            s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            name = s.get_inputs()[0].name
            for i in range(len(x)):
                logits.append(s.run(None, {name: x[i:i + 1]})[0])
        else:
            from tflite_runtime.interpreter import Interpreter
            it = Interpreter(model_path=path, num_threads=1); it.allocate_tensors()
            di, do = it.get_input_details()[0], it.get_output_details()[0]
            for i in range(len(x)):
                v = np.transpose(x[i:i + 1], perm)
                if di["dtype"] != np.float32:
                    sc, zp = di["quantization"]; info = np.iinfo(di["dtype"])
                    v = np.clip(np.round(v / sc) + zp, info.min, info.max).astype(di["dtype"])
                it.set_tensor(di["index"], v); it.invoke(); o = it.get_tensor(do["index"])
                if do["dtype"] != np.float32:
                    sc, zp = do["quantization"]; o = (o.astype(np.float32) - zp) * sc
                logits.append(o)
        pred = np.concatenate(logits).reshape(len(x), -1).argmax(1)
        out[a["kind"]] = float(100.0 * np.mean(pred == y))
    print(json.dumps(out))
''')


def _profile(bundle: Path, target: str) -> TargetProfile:
    return TargetProfile.model_validate(load_manifest(bundle)["targets"][target]["profile"])


def _independent_top1(bundle: Path, target: str, tmp_path: Path) -> dict:
    userland = prepare_userland(_profile(bundle, target))
    script = tmp_path / "independent.py"
    script.write_text(INDEPENDENT)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": userland.site_packages, "PYTHONNOUSERSITE": "1",
           "HOME": str(tmp_path)}
    proc = subprocess.run([userland.qemu, "-cpu", userland.cpu, "-L", str(userland.root),
                           str(userland.root) + userland.python, str(script), str(bundle), target],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def emulated(unseen_bundle, tmp_path_factory):
    """`edgepack verify --emulate --json` on the unseen CNN's bundle, rpi4 target."""
    assert unseen_bundle.proc.returncode == 0, unseen_bundle.proc.stderr
    out = tmp_path_factory.mktemp("emulated") / "result.json"
    proc = cli("verify", unseen_bundle.bundle, "--target", "rpi4", "--emulate", "--json", out, timeout=1800)
    return proc, json.loads(out.read_text()) if out.is_file() else None


def test_emulated_numbers_are_device_exact_and_match_an_independent_run(emulated, unseen_bundle, tmp_path):
    proc, result = emulated
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["runner"]["arch"] == "aarch64" and result["emulation"]["cpu"] == "cortex-a72"
    assert "cortex-a72" in result["runner"]["cpu"]
    pins = _profile(unseen_bundle.bundle, "rpi4").device_runtime
    independent = _independent_top1(unseen_bundle.bundle, "rpi4", tmp_path)
    for a in result["targets"]["rpi4"]["artifacts"]:
        assert a["gate_numerics"] == "device-exact", a
        runtime, version = a["runtime"].split()
        assert version == {"onnxruntime": pins.onnxruntime, "tflite_runtime": pins.tflite_runtime}[runtime]
        assert a["latency"] is None, "emulated time must not be reported as latency"
        reported = a["numerics"]["device-exact"]["top1"]
        assert abs(reported - independent[a["kind"]]) <= 0.2, (a["kind"], reported, independent[a["kind"]])


def test_merge_makes_accuracy_gates_read_device_exact_numbers(emulated, unseen_bundle, tmp_path):
    _, result = emulated
    bundle = tmp_path / "bundle"
    shutil.copytree(unseen_bundle.bundle, bundle)
    proc = cli("merge", bundle, _write(tmp_path / "r.json", result))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = load_manifest(bundle)
    for a in m["targets"]["rpi4"]["artifacts"]:
        metrics = a["metrics"]
        assert metrics["gate_numerics"] == "device-exact"
        assert "host" in metrics["numerics"] and metrics["numerics"]["device-exact"]["emulated"] is True
        drop = [g for g in metrics["gates"] if g["gate"] == "max_accuracy_drop"][0]
        expected = m["baseline"]["metrics"]["top1"] - metrics["numerics"]["device-exact"]["top1"]
        assert abs(drop["value"] - expected) < 1e-6
    # the x86-64 target is untouched: still host numbers
    assert artifact(m, "x86-64", "ort-int8")["metrics"]["gate_numerics"] == "host"
    report = (bundle / "report.md").read_text()
    assert "device-exact (gated)" in report and "emulated cortex-a72" in report
    assert m["device_results"][-1]["emulation"]["cpu"] == "cortex-a72"


def test_tampered_artifact_is_rejected_under_emulation(unseen_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(unseen_bundle.bundle, bundle)
    target = bundle / artifact(load_manifest(bundle), "rpi4", "tflite-int8")["path"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    # only the tampered artifact: the runner must refuse it before running anything
    proc = cli("verify", bundle, "--target", "rpi4", "--emulate", "--artifacts", "tflite-int8", timeout=1800)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "rpi4/model.int8.tflite" in proc.stderr and "checksum" in proc.stderr


def test_build_with_emulation_gates_on_device_exact(tmp_path, tiny_model, tiny_calib, tiny_eval):
    out = tmp_path / "dist"
    proc = cli("build", "--onnx", tiny_model, "--calib", tiny_calib, "--eval", tiny_eval, "--targets", "rpi4",
               "--out", out, "--emulate", "--latency-runs", "3", timeout=1800)
    m = load_manifest(out / f"{tiny_model.stem}-0.1.0")
    # whatever fails, the exit code and the manifest's status say the same
    assert proc.returncode == (0 if m["status"] == "passed" else 1), proc.stderr
    assert m["failures"] == [], m["failures"]
    for a in m["targets"]["rpi4"]["artifacts"]:
        assert a["metrics"]["gate_numerics"] == "device-exact"
        assert {"host", "device-exact"} <= set(a["metrics"]["numerics"])
    assert "device-exact" in (out / f"{tiny_model.stem}-0.1.0" / "report.md").read_text()


def test_missing_qemu_is_one_line_with_the_remedy(unseen_bundle, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "EDGEPACK_QEMU"}
    env["PATH"] = str(bindir)
    proc = subprocess.run([sys.executable, "-m", "edgepack", "verify", str(unseen_bundle.bundle), "--target", "rpi4",
                           "--emulate"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "qemu-aarch64-static" in line and "apt-get install qemu-user-static" in line, line


def test_runner_in_a_fresh_venv_with_only_numpy_and_onnxruntime(unseen_bundle, tmp_path):
    """The acceptance environment: nothing but numpy and onnxruntime (and edgepack's own files)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy", "onnxruntime"],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    src = tmp_path / "src"
    shutil.copytree(REPO / "edgepack", src / "edgepack", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(src), "HOME": str(tmp_path)}
    listing = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, env=env)
    installed = {line.split("==")[0].lower() for line in listing.stdout.split()}
    assert not installed & {"torch", "pydantic", "typer", "rich", "ai-edge-litert", "tflite-runtime", "onnx"}, installed

    same = subprocess.run([str(py), "-m", "edgepack.device", "verify", str(unseen_bundle.bundle), "--target", "x86-64",
                           "--runs", "3"], capture_output=True, text=True, env=env, timeout=600)
    assert same.returncode == 0, same.stdout + same.stderr
    # rpi4 also has TFLite artifacts: their runtime is missing here, and the runner says so
    arm = subprocess.run([str(py), "-m", "edgepack.device", "verify", str(unseen_bundle.bundle), "--target", "rpi4",
                          "--runs", "3"], capture_output=True, text=True, env=env, timeout=600)
    assert arm.returncode == 1, arm.stdout + arm.stderr
    assert "PASS rpi4/ort-int8" in arm.stdout
    assert "needs ai-edge-litert or tflite-runtime" in arm.stdout + arm.stderr
    # ... so a Pi with only onnxruntime verifies what it will run, and only that
    only_ort = subprocess.run([str(py), "-m", "edgepack.device", "verify", str(unseen_bundle.bundle),
                               "--target", "rpi4", "--artifacts", "ort-float,ort-int8", "--runs", "3",
                               "--json", str(tmp_path / "r.json")],
                              capture_output=True, text=True, env=env, timeout=600)
    assert only_ort.returncode == 0, only_ort.stdout + only_ort.stderr
    ran = [a["kind"] for a in json.loads((tmp_path / "r.json").read_text())["targets"]["rpi4"]["artifacts"]]
    assert ran == ["ort-float", "ort-int8"]
    assert "tflite" not in only_ort.stdout

    # and the `edgepack verify` command itself, from edgepack installed without its dependencies
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(REPO)],
                          capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr[-2000:]
    env.pop("PYTHONPATH")
    cmd = subprocess.run([str(venv / "bin" / "edgepack"), "verify", str(unseen_bundle.bundle), "--target", "x86-64",
                          "--runs", "3"], capture_output=True, text=True, env=env, timeout=600)
    assert cmd.returncode == 0, cmd.stdout + cmd.stderr
    assert "verified" in cmd.stdout
    other = subprocess.run([str(venv / "bin" / "edgepack"), "build", "x.toml"], capture_output=True, text=True, env=env)
    assert other.returncode == 2 and "only `edgepack verify" in other.stderr, other.stderr


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path
