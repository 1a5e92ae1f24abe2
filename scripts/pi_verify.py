"""Verify a release bundle on a real Raspberry Pi over SSH and merge its numbers into the bundle.

    python scripts/pi_verify.py dist/digits-cnn-1.0.0 --host pi@raspberrypi.local --target rpi4

What it does, with plain `ssh` (BatchMode: key login must work without a prompt):

1. Streams the bundle and edgepack's own pure-Python package (`edgepack/`, without
   `__pycache__` or `_targets`) to REMOTE_DIR on the device as one tar stream, unpacked there
   by `tar -x` (no scp or sftp needed). edgepack need not be installed on the device: the
   runner imports only the stdlib, numpy and the artifact's runtime.
2. Runs the torch-free device runner there:
       cd REMOTE_DIR && PYTHONPATH="$PWD/src" PYTHON -m edgepack.device verify bundle --target T --json result.json
3. Fetches result.json. The runner exits 1 when a check fails; its result is still fetched.
4. Unless --no-merge, merges the result into the local bundle's manifest.json and report.md
   (edgepack.merge). When the device has the profile's CPU
   architecture and runs the runtime version the profile pins, its numbers are
   "device-exact": they become the numbers the accuracy gates read, and its latency (a real
   device, not an emulator) becomes the latency the latency gates read.
5. Removes what it copied (REMOTE_DIR included, if then empty) unless --keep-remote.

REMOTE_DIR must be new, empty, or one this script made (it leaves a `.edgepack-verify`
marker there); `~/...` is expanded on the device.

Exit codes: 0 the device verification passed; 1 it failed (the result is still merged, and
the failures are listed); 2 usage, SSH or remote errors (one line on stderr).

The device set-up (Raspberry Pi OS, Python 3.11, the pinned runtime wheels) is in the
README, "Verifying on a real Raspberry Pi".
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MARKER = ".edgepack-verify"
SETUP_TIMEOUT = 900  # seconds to copy the bundle
SMALL_TIMEOUT = 120  # seconds for fetching the result and cleaning up


class Failure(Exception):
    """A usage, SSH or remote error: reported as one line, exit 2."""


def remote_path(path: str) -> str:
    """`path` quoted for the device's shell; a leading `~/` still means the device's home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "…" + text[-limit:]


class Remote:
    def __init__(self, host: str, port: int, identity: str | None, options: list[str]):
        self.host, self.port = host, port
        # ssh keeps the first value given for an option: BatchMode first (never prompt), then
        # the user's options, then defaults the user may override.
        self.base = ["ssh", "-o", "BatchMode=yes"]
        for opt in options:
            self.base += ["-o", opt]
        self.base += ["-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                      "-p", str(port)]
        if identity:
            self.base += ["-i", identity]

    def describe(self) -> str:
        return f"{self.host} (port {self.port})"

    def run(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([*self.base, "--", self.host, command], stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"ssh {self.describe()}: the remote command did not finish within {timeout:.0f} s") from None

    def run_with_tar(self, command: str, members: list[tuple[Path, str, object]],
                     timeout: float) -> tuple[int, str, str]:
        """Run `command` with a tar stream of `members` (path, name in the archive, filter) on its stdin."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([*self.base, "--", self.host, command], stdin=subprocess.PIPE,
                                    stdout=out, stderr=err)
            try:
                with tarfile.open(fileobj=proc.stdin, mode="w|", dereference=True) as tar:
                    for path, name, filt in members:
                        tar.add(path, arcname=name, filter=filt)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the remote side stopped reading; its exit status and stderr say why
            finally:
                try:
                    proc.stdin.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise Failure(f"ssh {self.describe()}: copying the bundle took longer than {timeout:.0f} s") from None
            out.seek(0)
            err.seek(0)
            return rc, out.read().decode(errors="replace"), err.read().decode(errors="replace")

    def fail(self, what: str, rc: int, stderr: str | bytes) -> Failure:
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        if rc == 255:
            return Failure(f"ssh {self.describe()} failed while {what}: {one_line(stderr) or 'no message'}")
        return Failure(f"{what} on {self.host} failed (exit {rc}): {one_line(stderr) or 'no message on stderr'}")


def _clean_tarinfo(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _package_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    parts = Path(info.name).parts
    if "__pycache__" in parts or "_targets" in parts or info.name.endswith((".pyc", ".pyo")):
        return None
    return _clean_tarinfo(info)


def _choose_target(manifest: dict, bundle: Path, target: str | None) -> str:
    targets = list(manifest["targets"])
    if target is None:
        if len(targets) == 1:
            return targets[0]
        raise Failure(f"{bundle} has several targets ({', '.join(targets)}): name the profile this device "
                      "matches with --target")
    if target not in targets:
        raise Failure(f"{bundle}: target {target!r} is not in this bundle (has: {', '.join(targets)})")
    return target


def _summary(result: dict, profile: dict, host: str) -> list[str]:
    runner = result.get("runner", {})
    lines = [f"device {host}: {runner.get('cpu', '?')} ({runner.get('arch', '?')}), {runner.get('os', '?')}, "
             f"Python {runner.get('python', '?')}"]
    lines += [f"FAIL {p['where']}: {p['reason']}" for p in result.get("problems", [])]
    not_exact = []
    for tname, t in result.get("targets", {}).items():
        for a in t["artifacts"]:
            m = a.get("metrics")
            if not m:
                lines.append(f"FAIL {tname}/{a['kind']}: {a.get('error', 'not run')}")
                continue
            # the runner writes non-finite numbers as "inf" / "nan" strings (JSON has none); float() reads them
            acc = f"top-1 {float(m['top1']):.2f} %, " if m.get("top1") is not None else ""
            lat = a.get("latency")
            lat_s = f", p50 {lat['p50_ms']:.3f} ms" if lat else ""
            sqnr = float(m["sqnr_db"])
            lines.append(f"{'PASS' if a['passed'] else 'FAIL'} {tname}/{a['kind']}: {acc}SQNR {sqnr:.1f} dB"
                         f"{lat_s} ({a['gate_numerics']} numerics, {a['runtime']})")
            if a["gate_numerics"] != "device-exact":
                not_exact.append(f"{tname}/{a['kind']} ({a['runtime']})")
    if not_exact:
        pins = {k: v for k, v in (profile.get("device_runtime") or {}).items() if k != "python" and v}
        lines.append(f"note: not device-exact: {', '.join(not_exact)}; the profile expects "
                     f"{profile['cpu']['arch']} with "
                     + (", ".join(f"{k} {v}" for k, v in pins.items()) or "no pinned runtime"))
    lines.append("device verification " + ("PASSED" if result.get("passed") else "FAILED"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Exit codes: 0 passed, 1 device verification failed, "
                                            "2 usage/SSH/remote error.")
    parser.add_argument("bundle", type=Path, help="a dist/<name>-<version> folder")
    parser.add_argument("--host", required=True, help="user@host of the device, e.g. pi@raspberrypi.local")
    parser.add_argument("--target", help="the bundle's target this device is (needed when the bundle has several)")
    parser.add_argument("--port", type=int, default=22)
    parser.add_argument("--identity", help="ssh private key file (ssh -i)")
    parser.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra ssh -o option; repeatable")
    parser.add_argument("--remote-dir", default="/tmp/edgepack-verify", help="working folder on the device")
    parser.add_argument("--python", default="python3", help="the device's interpreter, e.g. ~/edgepack-venv/bin/python")
    parser.add_argument("--artifacts", help="only these artifact kinds, comma-separated (e.g. ort-float,ort-int8 "
                        "on a device that has onnxruntime but no TFLite runtime)")
    parser.add_argument("--runs", type=int, help="latency runs on the device (the runner's default: 50)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the device run may take")
    parser.add_argument("--no-merge", action="store_true", help="do not change the local bundle")
    parser.add_argument("--json", type=Path, help="also write the device result JSON here")
    parser.add_argument("--keep-remote", action="store_true", help="leave the copied files on the device")
    args = parser.parse_args(argv)
    try:
        return verify_on_device(args)
    except Failure as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


def verify_on_device(args: argparse.Namespace) -> int:
    try:
        import edgepack
    except ImportError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        import edgepack
    from edgepack.errors import EdgepackError
    from edgepack.verification.device import read_bundle_manifest as read_manifest

    bundle = args.bundle
    try:
        manifest = read_manifest(bundle)
    except EdgepackError as exc:
        raise Failure(str(exc)) from None
    target = _choose_target(manifest, bundle, args.target)
    if shutil.which("ssh") is None:
        raise Failure("ssh not found on this machine: install an OpenSSH client "
                      "(Debian: apt-get install openssh-client)")
    if args.identity and not Path(args.identity).expanduser().is_file():
        raise Failure(f"--identity {args.identity}: no such key file")
    for opt in args.ssh_option:
        if "=" not in opt or not opt.split("=", 1)[0].strip():
            raise Failure(f"--ssh-option {opt!r}: expected KEY=VALUE, e.g. StrictHostKeyChecking=accept-new")
    rdir = args.remote_dir.rstrip("/") or "/"
    if rdir in ("/", "~", ".", "..", ""):
        raise Failure(f"--remote-dir {args.remote_dir!r}: give a folder of its own, e.g. /tmp/edgepack-verify")
    remote = Remote(args.host, args.port, str(Path(args.identity).expanduser()) if args.identity else None,
                    args.ssh_option)
    R = remote_path(rdir)
    package = Path(edgepack.__file__).resolve().parent

    # 1. copy: only into a new/empty folder or one this script made; stale copies are replaced.
    refuse = shlex.quote(f"{rdir} on the device is not empty and was not made by pi_verify.py; "
                         "choose another --remote-dir")
    setup = (f"mkdir -p {R} && cd {R} && "
             f"{{ [ -e {MARKER} ] || [ -z \"$(ls -A)\" ] || {{ echo {refuse} >&2; exit 3; }}; }} && "
             f"touch {MARKER} && rm -rf bundle src result.json && tar -xmf -")
    print(f"copying {bundle} and edgepack ({package}) to {args.host}:{rdir}", flush=True)
    rc, _, err = remote.run_with_tar(setup, [(bundle, "bundle", _clean_tarinfo),
                                             (package, "src/edgepack", _package_filter)],
                                     SETUP_TIMEOUT)
    if rc != 0:
        if rc != 255:
            _cleanup(remote, R, args.keep_remote)
        raise remote.fail("copying the bundle", rc, err)
    try:
        result = _run_and_fetch(remote, R, target, args)
    finally:
        _cleanup(remote, R, args.keep_remote)

    if args.json:
        try:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise Failure(f"--json {args.json}: cannot write ({exc.strerror})") from None
    for line in _summary(result, manifest["targets"][target]["profile"], args.host):
        print(line)
    if not args.no_merge:
        from edgepack.api import merge

        try:
            merged = merge(bundle, result)
        except EdgepackError as exc:
            raise Failure(f"merging the device result into {bundle}: {exc}") from None
        print(f"merged into {bundle / 'manifest.json'} and report.md: bundle status {merged.status}")
    return 0 if result.get("passed") else 1


def _run_and_fetch(remote: Remote, R: str, target: str, args: argparse.Namespace) -> dict:
    # 2. run the device runner
    extra = f" --runs {int(args.runs)}" if args.runs else ""
    if args.artifacts:
        extra += f" --artifacts {shlex.quote(args.artifacts)}"
    command = (f"cd {R} && PYTHONPATH=\"$PWD/src\" PYTHONDONTWRITEBYTECODE=1 {remote_path(args.python)} "
               f"-m edgepack.device verify bundle --target {shlex.quote(target)} --json result.json{extra}")
    print(f"running the device runner on {args.host} ({target})", flush=True)
    run = remote.run(command, args.timeout)
    if run.returncode == 127:
        raise Failure(f"{args.python} not found on {args.host} (give the device's interpreter with --python): "
                      f"{one_line(run.stderr.decode(errors='replace'))}")
    if run.returncode not in (0, 1):  # 1 = a check failed, result written
        raise remote.fail("the device runner", run.returncode, run.stderr)
    # 3. fetch the result
    fetched = remote.run(f"cat {R}/result.json", SMALL_TIMEOUT)
    if fetched.returncode != 0:
        if fetched.returncode == 255:
            raise remote.fail("fetching result.json", fetched.returncode, fetched.stderr)
        raise remote.fail("the device runner (no result.json written)", run.returncode, run.stderr or run.stdout)
    try:
        result = json.loads(fetched.stdout)
    except ValueError as exc:
        raise Failure(f"{args.host}: result.json is not valid JSON ({exc})") from None
    if not isinstance(result, dict) or result.get("schema") != "edgepack.device-result/2":
        raise Failure(f"{args.host}: result.json is not an edgepack device result")
    return result


def _cleanup(remote: Remote, R: str, keep: bool) -> None:
    """Remove what was copied, and the folder if then empty; only in a folder carrying the marker."""
    if keep:
        return
    try:
        remote.run(f"cd {R} && [ -e {MARKER} ] && d=\"$PWD\" && rm -rf bundle src result.json {MARKER} "
                   f"&& cd / && rmdir \"$d\" 2>/dev/null; true", SMALL_TIMEOUT)
    except Failure:
        pass  # best effort: the result is already here


if __name__ == "__main__":
    sys.exit(main())
