"""Re-verifying a bundle: `edgepack verify` and the torch-free device runner."""

from __future__ import annotations

import json

import pytest
from conftest import PY, artifact, base_env, cli, device, explain, load_manifest, run

RUNS = ("--runs", "3")


@pytest.fixture(scope="module")
def bundle(unseen_bundle):
    assert unseen_bundle.proc.returncode == 0, explain(unseen_bundle.proc)
    return unseen_bundle.bundle


def _flip_bytes(path, offset_fraction=0.5, n=8):
    data = bytearray(path.read_bytes())
    i = int(len(data) * offset_fraction)
    for k in range(i, min(i + n, len(data))):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def test_cli_verify_untouched_bundle_passes(bundle, tmp_path):
    out = tmp_path / "result.json"
    proc = cli("verify", bundle, *RUNS, "--json", out)
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.strip().splitlines()[-1] == "verified"
    r = json.loads(out.read_text())
    assert r["passed"] is True and r["problems"] == []
    arts = {(t, a["kind"]): a for t, tr in r["targets"].items() for a in tr["artifacts"]}
    assert {("rpi4", "ort-int8"), ("x86-64", "ort-int8"), ("rpi4", "ort-float")} <= set(arts)
    assert arts[("rpi4", "ort-int8")]["gate_numerics"] == "reference"
    assert all(a["passed"] for a in arts.values())


def test_device_runner_untouched_bundle_passes_for_one_target(bundle, tmp_path):
    out = tmp_path / "result.json"
    proc = device("verify", bundle, "--target", "x86-64", *RUNS, "--json", out)
    assert proc.returncode == 0, explain(proc)
    r = json.loads(out.read_text())
    assert r["passed"] is True and list(r["targets"]) == ["x86-64"]
    assert r["schema"] == "edgepack.device-result/2"


@pytest.mark.parametrize("victim", [
    "x86-64/model.int8.ort",
    "rpi4/model.float32.ort",
    "rpi4/model.int8.required_operators.config",
    "golden/inputs.npz",
    "rpi4/model.int8.qdq.onnx",
    "x86-64/model.int8.qdq.onnx",
])
def test_device_runner_detects_tampering(bundle, bundle_copy, victim):
    b = bundle_copy(bundle)
    _flip_bytes(b / victim)
    owner = victim.split("/")[0]
    target = owner if owner in ("rpi4", "x86-64") else "x86-64"  # shared files are checked for any target
    proc = device("verify", b, "--target", target, *RUNS)
    assert proc.returncode == 1, f"tampered {victim} went unnoticed:\n{explain(proc)}"
    assert victim in proc.stdout + proc.stderr, explain(proc)
    assert "verification FAILED" in proc.stdout


def test_cli_verify_detects_tampering(bundle, bundle_copy):
    b = bundle_copy(bundle)
    _flip_bytes(b / "rpi4" / "model.int8.ort", 0.9)
    proc = cli("verify", b, *RUNS)
    assert proc.returncode == 1, explain(proc)
    assert "rpi4/model.int8.ort" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_verify_detects_missing_file(bundle, bundle_copy):
    b = bundle_copy(bundle)
    path = artifact(load_manifest(b), "x86-64", "ort-float")["path"]
    (b / path).unlink()
    proc = cli("verify", b, *RUNS)
    assert proc.returncode == 1, explain(proc)
    assert path in proc.stdout + proc.stderr


def test_verify_merge_keeps_a_tampered_golden_input_as_a_failure(bundle, bundle_copy):
    """The acceptance case: a device run that fails on a shared file fails the merged bundle."""
    b = bundle_copy(bundle)
    _flip_bytes(b / "golden" / "inputs.npz", 0.9)
    proc = cli("verify", b, "--target", "x86-64", "--merge", *RUNS)
    assert proc.returncode == 1, explain(proc)
    m = json.loads((b / "manifest.json").read_text())
    assert m["status"] == "failed" and m["gates_passed"] is False
    (f,) = m["failures"]
    assert f["source"] == "device" and "golden/inputs.npz" in f["reason"] and "checksum" in f["reason"]
    assert f["where"] and m["device_results"][-1]["passed"] is False
    report = (b / "report.md").read_text()
    assert report.startswith(f"# {m['name']} {m['version']} — FAILED")
    assert "golden/inputs.npz: checksum mismatch" in report
    assert "golden/inputs.npz" in proc.stderr


def test_verify_merge_keeps_a_float_golden_mismatch(bundle, bundle_copy):
    """Golden reference outputs that the float artifact does not reproduce: that artifact fails."""
    import numpy as np

    b = bundle_copy(bundle)
    manifest = json.loads((b / "manifest.json").read_text())
    ref = b / manifest["golden"]["reference_outputs"]["path"]
    with np.load(ref) as z:
        arrays = {k: z[k] + 10.0 for k in z.files}  # the float model no longer reproduces these
    np.savez(ref, **arrays)
    from edgepack.manifest.jsonio import sha256_file
    from edgepack.signing import write_sums

    manifest["golden"]["reference_outputs"].update(sha256=sha256_file(ref), size_bytes=ref.stat().st_size)
    (b / "manifest.json").write_text(json.dumps(manifest))
    write_sums(b)  # a consistent edit: only the float model itself can tell
    proc = cli("verify", b, "--target", "x86-64", "--merge", *RUNS)
    assert proc.returncode == 1, explain(proc)
    m = json.loads((b / "manifest.json").read_text())
    assert m["status"] == "failed"
    failing = {(f["target"], f["artifact"]) for f in m["failures"] if "golden outputs differ" in f["reason"]}
    assert failing == {("x86-64", "ort-float")}, m["failures"]
    assert "golden outputs differ" in (b / "report.md").read_text()


@pytest.mark.parametrize("args, needle", [
    (("--target", "jetson"), "jetson"),
    (("__not_a_bundle__",), "__not_a_bundle__"),
])
def test_verify_bad_usage_exits_2(bundle, tmp_path, args, needle):
    target_args = [bundle, *args] if args[0].startswith("--") else [tmp_path / args[0]]
    proc = cli("verify", *target_args, *RUNS)
    assert proc.returncode == 2, explain(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------
# No torch on the device


def test_torch_blocker_is_effective(torchless_env):
    proc = run([PY, "-c", "import torch"], env=torchless_env())
    assert proc.returncode != 0 and "blocked by the edgepack test environment" in proc.stderr


def test_device_runner_works_without_torch(bundle, torchless_env, tmp_path):
    mods = tmp_path / "modules.json"
    proc = run([PY, "-m", "edgepack.device", "verify", str(bundle), *RUNS], env=torchless_env(mods))
    assert proc.returncode == 0, explain(proc)
    loaded = set(json.loads(mods.read_text()))
    assert "edgepack.verification.device" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("pydantic", "onnx", "typer", "rich")}
    assert not {m for m in loaded if m.split(".")[0] == "torch"}


def test_cli_verify_works_without_torch(bundle, torchless_env, tmp_path):
    mods = tmp_path / "modules.json"
    code = (
        "import sys\n"
        "from edgepack.cli import main\n"
        f"sys.argv = ['edgepack', 'verify', {str(bundle)!r}, '--runs', '3']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(code)\n"
    )
    proc = run([PY, "-c", code], env=torchless_env(mods))
    assert proc.returncode == 0, explain(proc)
    assert "verified" in proc.stdout
    assert "edgepack.verification.device" in set(json.loads(mods.read_text()))
    assert not {m for m in json.loads(mods.read_text()) if m.split(".")[0] == "torch"}


def test_light_imports():
    """`import edgepack` and the device runner pull in none of the build-time stack."""
    code = ("import json, sys, edgepack, edgepack.device\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    proc = run([PY, "-c", code], env=base_env())
    assert proc.returncode == 0, explain(proc)
    top = set(json.loads(proc.stdout))
    assert "edgepack" in top
    assert not top & {"torch", "pydantic", "typer", "rich"}, top & {"torch", "pydantic", "typer", "rich"}
