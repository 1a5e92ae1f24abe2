"""scripts/pi_verify.py against a real SSH server on loopback standing in for a Raspberry Pi.

The test starts OpenSSH's `sshd` on 127.0.0.1 (random port, temporary host and client keys)
and uses this interpreter — which has numpy and onnxruntime — as the "device" Python. The
bundle's target profiles have this host's ISA; one pins the installed onnxruntime version,
so the device runner's numbers are device-exact and the device path of the merge is taken.

sshd is a system package (Debian: openssh-server); CI installs it. Without it these tests
fail rather than skip.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
import tomllib
from conftest import PY, REPO, base_env, explain, load_manifest, run, same_isa_target

SCRIPT = REPO / "scripts" / "pi_verify.py"
SSHD = Path("/usr/sbin/sshd")
RUNS = ("--runs", "3")


# ---------------------------------------------------------------------------------------
# A loopback SSH server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Sshd:
    def __init__(self, port: int, key: Path, user: str, log: Path):
        self.port, self.key, self.user, self.log = port, key, user, log

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"

    def args(self) -> list[str]:
        """The script's connection flags for this server."""
        return ["--host", self.host, "--port", str(self.port), "--identity", str(self.key),
                "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null",
                "--ssh-option", "LogLevel=ERROR"]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not SSHD.is_file():
        pytest.fail(f"{SSHD} is not installed: these tests need an SSH server on loopback "
                    "(Debian/Ubuntu: apt-get install openssh-server)")
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (Debian/Ubuntu: apt-get install openssh-client)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"edgepack-test-{name}",
                        "-f", str(d / name)], check=True, capture_output=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    user = getpass.getuser()
    proc, port, log = None, None, d / "sshd.log"
    for _attempt in range(3):  # a port taken between choosing and binding it: try another one
        port = _free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "StrictModes no\nUsePAM no\nLogLevel VERBOSE\n")
        with open(log, "w") as log_file:  # a file, not a pipe: a full pipe would block sshd
            proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")],
                                    stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None and not _accepts(port):
            time.sleep(0.1)
        if proc.poll() is None and _accepts(port):
            break
        _stop(proc)
        proc = None
    if proc is None:
        pytest.fail(f"sshd did not start on 127.0.0.1:\n{log.read_text()[-2000:]}")
    server = Sshd(port, d / "client_key", user, log)
    try:
        probe = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-i", str(server.key),
                                "-p", str(port), server.host, "echo ok"], capture_output=True, text=True, timeout=30)
        if probe.stdout.strip() != "ok":
            pytest.fail(f"key login to the loopback sshd failed: {explain(probe)}\n"
                        f"--- sshd log\n{log.read_text()[-2000:]}")
        yield server
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------
# A bundle whose targets have this host's ISA


def _toml_value(v) -> str:
    assert not isinstance(v, dict), "profiles here are one table deep"
    return json.dumps(v)  # strings, numbers, booleans and lists of them read the same in TOML


def _write_profile(path: Path, data: dict) -> Path:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for table, values in data.items():
        if isinstance(values, dict):
            lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def pi_bundle(tmp_path_factory, tiny_model, tiny_calib, tiny_eval) -> Path:
    """Targets `pinned` (the shipped same-ISA profile, ONNX Runtime artifacts only, pinning the
    installed onnxruntime: device-exact here) and `nopin` (the same without a pin: host)."""
    import onnxruntime

    from edgepack.config import config_from_dict
    from edgepack.pipeline import build

    d = tmp_path_factory.mktemp("pi_bundle")
    base = tomllib.loads((REPO / "targets" / f"{same_isa_target()}.toml").read_text())
    base["artifacts"] = ["ort-float", "ort-int8"]
    base.pop("tflite", None)
    base.pop("device_runtime", None)
    pinned = _write_profile(d / "pinned.toml", {**base, "device_runtime": {"python": "3.11",
                                                                           "onnxruntime": onnxruntime.__version__}})
    nopin = _write_profile(d / "nopin.toml", base)
    cfg = config_from_dict({
        "name": "tiny-pi", "version": "1.0.0", "out": str(d / "dist"),
        "model": {"onnx": str(tiny_model)},
        "data": {"calibration": str(tiny_calib), "evaluation": str(tiny_eval)},
        "targets": [str(pinned), str(nopin)],
        "verify": {"latency_runs": 3, "warmup_runs": 1},
    })
    result = build(cfg)
    assert result.passed, result.failures
    return result.bundle


@pytest.fixture
def bundle(pi_bundle, tmp_path) -> Path:
    """A fresh copy: the script changes the bundle it verifies."""
    return Path(shutil.copytree(pi_bundle, tmp_path / pi_bundle.name))


def pi_verify(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return run([PY, str(SCRIPT), *map(str, args)], env=base_env(), timeout=timeout)


def _kinds(manifest: dict, target: str) -> dict:
    return {a["kind"]: a for a in manifest["targets"][target]["artifacts"]}


# ---------------------------------------------------------------------------------------
# Tests


def test_device_exact_result_is_fetched_and_merged(sshd, bundle, tmp_path):
    # A device Python without the editable checkout on sys.path: the runner must come from
    # the copy the script sends, as on a Pi where edgepack is not installed.
    where = tmp_path / "edgepack_imported_from.txt"
    device_python = tmp_path / "device-python"
    device_python.write_text(f"""#!{PY}
import runpy, sys
sys.path[:] = [p for p in sys.path if p.rstrip("/") != {str(REPO)!r}]
assert sys.argv[1] == "-m", sys.argv
module, sys.argv = sys.argv[2], sys.argv[2:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    open({str(where)!r}, "w").write(sys.modules["edgepack"].__file__)
""")
    device_python.chmod(device_python.stat().st_mode | stat.S_IXUSR)
    remote = tmp_path / "device home" / "it's here"  # quoting: a space and a quote
    out = tmp_path / "result.json"
    before = load_manifest(bundle)

    proc = pi_verify(bundle, *sshd.args(), "--target", "pinned", "--remote-dir", remote, "--python", device_python,
                     "--json", out, *RUNS)
    assert proc.returncode == 0, explain(proc) + "\n--- sshd\n" + sshd.log.read_text()[-2000:]
    assert "device verification PASSED" in proc.stdout

    # the runner ran from the copied package, and the copy was removed afterwards
    assert Path(where.read_text()).is_relative_to(remote / "src" / "edgepack"), where.read_text()
    assert not remote.exists(), list(remote.rglob("*"))

    result = json.loads(out.read_text())
    assert result["schema"] == "edgepack.device-result/2" and result["passed"] is True
    assert list(result["targets"]) == ["pinned"]

    m = load_manifest(bundle)
    (dr,) = m["device_results"]
    from edgepack.verification.hostinfo import host_info

    assert dr["runner"]["arch"] == host_info()["arch"] and dr["runner"]["cpu"] == host_info()["cpu"]
    assert dr["runner"]["python"] and dr["emulation"] is None and dr["problems"] == []
    for kind, a in _kinds(m, "pinned").items():
        mt = a["metrics"]
        assert mt["gate_numerics"] == "device-exact", kind
        exact = mt["numerics"]["device-exact"]
        assert exact["emulated"] is False and exact["runtime"].startswith("onnxruntime ")
        assert mt["device_latency"]["measured_on"] == "device" and mt["device_latency"]["p50_ms"] > 0
        assert mt["passed"] is True
    for kind, a in _kinds(m, "nopin").items():  # not the target that was run: untouched
        assert a["metrics"] == _kinds(before, "nopin")[kind]["metrics"]
    assert m["status"] == "passed"
    report = (bundle / "report.md").read_text()
    assert "device-exact (gated)" in report
    assert dr["where"] in report


def test_keep_remote_holds_only_the_bundle_and_the_pure_python_package(sshd, bundle, tmp_path):
    remote = tmp_path / "remote"
    manifest_before = (bundle / "manifest.json").read_bytes()
    for _ in range(2):  # the second run replaces the first run's copy in the same folder
        proc = pi_verify(bundle, *sshd.args(), "--target", "pinned", "--remote-dir", remote, "--python", PY,
                         "--keep-remote", "--no-merge", *RUNS)
        assert proc.returncode == 0, explain(proc)
    assert (bundle / "manifest.json").read_bytes() == manifest_before  # --no-merge
    assert sorted(p.name for p in remote.iterdir()) == [".edgepack-verify", "bundle", "result.json", "src"]
    assert (remote / "bundle" / "manifest.json").read_bytes() == manifest_before
    copied = sorted(str(p.relative_to(remote / "src")) for p in (remote / "src").rglob("*") if p.is_file())
    shipped = sorted(str(p.relative_to(REPO)) for p in (REPO / "edgepack").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    assert copied == shipped
    assert not list((remote / "src").rglob("__pycache__")) and not list((remote / "src").rglob("_targets"))
    assert json.loads((remote / "result.json").read_text())["passed"] is True


def test_numbers_that_are_not_device_exact_stay_beside_the_gated_ones(sshd, bundle, tmp_path):
    proc = pi_verify(bundle, *sshd.args(), "--target", "nopin", "--remote-dir", tmp_path / "remote",
                     "--python", PY, *RUNS)
    assert proc.returncode == 0, explain(proc)
    assert "note: not device-exact" in proc.stdout
    m = load_manifest(bundle)
    assert len(m["device_results"]) == 1
    for a in _kinds(m, "nopin").values():
        mt = a["metrics"]
        assert mt["gate_numerics"] == "host" and "device-exact" not in mt["numerics"]
        (run_,) = mt["device_runs"]
        assert "host" in run_["numerics"] and "not device-exact" in run_["note"]


def test_tampered_artifact_fails_and_is_named(sshd, bundle, tmp_path):
    victim = bundle / "pinned" / "model.int8.ort"
    data = bytearray(victim.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    victim.write_bytes(bytes(data))
    proc = pi_verify(bundle, *sshd.args(), "--target", "pinned", "--remote-dir", tmp_path / "remote",
                     "--python", PY, *RUNS)
    assert proc.returncode == 1, explain(proc)
    assert "pinned/model.int8.ort" in proc.stdout and "checksum" in proc.stdout, explain(proc)
    assert "device verification FAILED" in proc.stdout
    m = load_manifest(bundle)
    assert m["status"] == "failed"
    (failure,) = _kinds(m, "pinned")["ort-int8"]["metrics"]["device_failures"]
    assert "pinned/model.int8.ort" in failure["reason"] and "checksum" in failure["reason"]
    assert any(f["artifact"] == "ort-int8" and "checksum" in f["reason"] for f in m["failures"])
    assert not (tmp_path / "remote").exists()


def test_unreachable_host_is_one_clear_line(bundle):
    port = _free_port()  # nothing listens there
    before = (bundle / "manifest.json").read_bytes()
    proc = pi_verify(bundle, "--host", "pi@127.0.0.1", "--port", port, "--target", "pinned",
                     "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null")
    assert proc.returncode == 2, explain(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, explain(proc)
    assert lines[0].startswith("error: ssh ") and str(port) in lines[0] and "refused" in lines[0], explain(proc)
    assert (bundle / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("python, needle", [
    ("/nonexistent/bin/python3", "not found on"),
    ("{fake}", "device runner"),
])
def test_runner_that_cannot_run_reports_the_remote_error(sshd, bundle, tmp_path, python, needle):
    """Exit 1 without a result (e.g. a device Python without numpy) or any other exit status."""
    fake = tmp_path / "python-without-numpy"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'numpy'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = pi_verify(bundle, *sshd.args(), "--target", "pinned", "--remote-dir", tmp_path / "remote",
                     "--python", python.format(fake=fake))
    assert proc.returncode == 2, explain(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], explain(proc)
    assert ("No such file" if "nonexistent" in python else "No module named 'numpy'") in lines[0], explain(proc)
    assert not (tmp_path / "remote").exists()
    assert load_manifest(bundle)["device_results"] == []


def test_refuses_a_remote_folder_it_did_not_make(sshd, bundle, tmp_path):
    remote = tmp_path / "someones-folder"
    (remote / "src").mkdir(parents=True)
    (remote / "src" / "keep.txt").write_text("not ours")
    proc = pi_verify(bundle, *sshd.args(), "--target", "pinned", "--remote-dir", remote, "--python", PY)
    assert proc.returncode == 2, explain(proc)
    assert len(proc.stderr.strip().splitlines()) == 1 and "not made by pi_verify.py" in proc.stderr, explain(proc)
    assert (remote / "src" / "keep.txt").read_text() == "not ours"


def test_usage_errors_need_no_connection(bundle, tmp_path):
    cases = [
        ([bundle], "--target"),                                   # two targets: which one is this device?
        ([bundle, "--target", "rpi9"], "not in this bundle"),
        ([tmp_path / "no-bundle"], "no-bundle"),
        ([bundle, "--target", "pinned", "--ssh-option", "BatchMode"], "KEY=VALUE"),
        ([bundle, "--target", "pinned", "--remote-dir", "/"], "--remote-dir"),
    ]
    for args, needle in cases:
        proc = pi_verify(*args, "--host", "pi@192.0.2.1")  # TEST-NET-1: never contacted
        assert proc.returncode == 2, explain(proc)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], explain(proc)


def test_remote_paths_are_quoted_for_the_device_shell(tmp_path):
    """What the script sends through ssh is read by the device's shell: `~/` is the device's
    home, everything else is literal."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pi_verify", SCRIPT)
    pi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pi)
    home = tmp_path / "home of pi"
    for path, want in [("~/edgepack-venv/bin/python", f"{home}/edgepack-venv/bin/python"), ("~", str(home)),
                       ("/tmp/it's $HOME; rm -rf x", "/tmp/it's $HOME; rm -rf x"), ("~pi/x", "~pi/x")]:
        got = subprocess.run(["sh", "-c", f"printf %s {pi.remote_path(path)}"], env={"HOME": str(home)},
                             capture_output=True, text=True, check=True).stdout
        assert got == want, (path, got)
