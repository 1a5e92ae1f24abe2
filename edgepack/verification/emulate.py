"""Device-exact numerics from an x86 host: the device runner in an emulated ARM userland.

For a profile whose CPU is aarch64, edgepack assembles (once, then caches) a userland that
matches the device: an arm64 Debian root with the profile's Python version, unpacked from
Debian's own packages, plus the aarch64 wheels of exactly the runtime versions the profile
pins. It then runs `python -m edgepack.device verify` inside it under `qemu-user` with the
profile's CPU model (e.g. cortex-a72 for a Raspberry Pi 4). The result is the device's
arithmetic, bit for bit — "device-exact numerics, emulated". Emulated time is not device
time, so no latency is reported from it.

Prerequisites: qemu-user (Debian: qemu-user-static), apt-get and dpkg (a Debian-family
host), pip, and access to the package registries for the first preparation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgepackError

QEMU_ARCH = {"aarch64": "aarch64", "armv7l": "arm"}
DEBIAN_ARCH = {"aarch64": "arm64", "armv7l": "armhf"}
WHEEL_PLATFORMS = {
    "aarch64": [f"manylinux_2_{v}_aarch64" for v in (36, 35, 34, 33, 32, 31, 28, 27, 26, 17)]
               + ["manylinux2014_aarch64"],
}
# Disk needed to prepare one userland (debs + wheels + unpacked root), checked up front.
MIN_FREE_BYTES = 1 << 30


class EmulationError(EdgepackError):
    """A prerequisite for emulated verification is missing; the message says the remedy."""


def cache_root() -> Path:
    return Path(os.environ.get("EDGEPACK_CACHE", Path.home() / ".cache" / "edgepack")) / "emulation"


@dataclass(frozen=True)
class Userland:
    root: Path
    python: str  # path of the interpreter inside the root, e.g. /usr/bin/python3.11
    site_packages: str  # path inside the root
    qemu: str
    cpu: str
    versions: dict


def find_qemu(arch: str) -> str:
    name = QEMU_ARCH.get(arch)
    if name is None:
        raise EmulationError(f"no emulation for CPU architecture {arch!r}; supported: {', '.join(QEMU_ARCH)}")
    override = os.environ.get("EDGEPACK_QEMU")
    for candidate in ([override] if override else []) + [f"qemu-{name}-static", f"qemu-{name}"]:
        path = shutil.which(candidate)
        if path:
            return path
    raise EmulationError(f"qemu-{name}-static not found: install qemu-user "
                         "(Debian/Ubuntu: apt-get install qemu-user-static)")


def _requirements(profile) -> tuple[str, list[str]]:
    """(python version, pip requirement strings) the profile pins for its device."""
    rt = profile.device_runtime
    reqs = []
    if rt.numpy:
        reqs.append(f"numpy=={rt.numpy}")
    else:
        reqs.append("numpy")
    for field, dist in (("onnxruntime", "onnxruntime"), ("ai_edge_litert", "ai-edge-litert"),
                        ("tflite_runtime", "tflite-runtime")):
        version = getattr(rt, field)
        if version:
            reqs.append(f"{dist}=={version}")
    if len(reqs) == 1:
        raise EmulationError(f"target {profile.name}: [device_runtime] pins no runtime version "
                             "(onnxruntime, ai_edge_litert or tflite_runtime); nothing device-exact to run")
    return rt.python, reqs


def prepare_userland(profile, progress=None) -> Userland:
    """The cached userland for the profile's CPU, Python and runtime pins (built if missing)."""
    arch = profile.cpu.arch
    qemu = find_qemu(arch)
    python, reqs = _requirements(profile)
    key = hashlib.sha256(json.dumps([arch, python, sorted(reqs)]).encode()).hexdigest()[:16]
    root = cache_root() / f"{DEBIAN_ARCH[arch]}-py{python}-{key}"
    marker = root / ".edgepack-userland.json"
    if not marker.is_file():
        _build_userland(root, arch, python, reqs, progress)
        marker.write_text(json.dumps({"arch": arch, "python": python, "requirements": reqs}, indent=2))
    versions = json.loads(marker.read_text())
    return Userland(root=root, python=f"/usr/bin/python{python}", site_packages="/opt/edgepack/site-packages",
                    qemu=qemu, cpu=profile.cpu.model, versions=versions)


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise EmulationError(f"{what}: '{cmd[0]}' not found; emulated verification needs a Debian-family host "
                             "with apt-get and dpkg") from None
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).split())[-300:]
        raise EmulationError(f"{what} failed ({tail}); check access to the package registries")
    return proc.stdout


def _build_userland(root: Path, arch: str, python: str, reqs: list[str], progress) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(root.parent).free < MIN_FREE_BYTES:
        raise EmulationError(f"{root.parent}: less than 1 GiB free to prepare the emulated userland; "
                             "free some space or set EDGEPACK_CACHE to a larger disk")
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=root.parent))
    try:
        tree = staging / "root"
        tree.mkdir()
        debs = _download_debian_packages(staging, DEBIAN_ARCH[arch], python, progress)
        for i, deb in enumerate(debs):
            _run(["dpkg-deb", "-x", str(deb), str(tree)], f"unpacking {deb.name}")
            if progress:
                progress(i + 1, len(debs))
        _install_wheels(tree / "opt" / "edgepack" / "site-packages", staging / "wheels", arch, python, reqs)
        shutil.rmtree(staging / "apt", ignore_errors=True)
        if root.exists():
            shutil.rmtree(root)
        tree.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_debian_packages(work: Path, deb_arch: str, python: str, progress) -> list[Path]:
    """Fetch the packages a minimal Python needs with a private apt state (the host's apt
    configuration is untouched), using the host's Debian sources."""
    sources = ([p for p in Path("/etc/apt/sources.list.d").glob("*.sources")]
               if Path("/etc/apt/sources.list.d").is_dir() else [])
    legacy = Path("/etc/apt/sources.list")
    state = work / "apt"
    for d in ("lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d"):
        (state / d).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    debian_sources = [s for s in sources if "debian" in s.read_text()]
    for s in debian_sources:
        shutil.copy(s, state / "etc" / "sources.list.d" / s.name)
    if legacy.is_file():
        shutil.copy(legacy, state / "etc" / "sources.list.d" / "legacy.list")
    if not debian_sources and not legacy.is_file():
        raise EmulationError("no Debian package sources on this host (/etc/apt); emulated verification "
                             "needs a Debian-family host")
    opts = [f"-oDir::State={state}", f"-oDir::State::status={state / 'status'}", f"-oDir::Cache={state / 'cache'}",
            "-oDir::Etc::SourceList=/dev/null", f"-oDir::Etc::SourceParts={state / 'etc' / 'sources.list.d'}",
            f"-oDir::Etc::Parts={state / 'etc' / 'apt.conf.d'}", "-oDir::Etc::Preferences=/dev/null",
            f"-oDir::Etc::PreferencesParts={state / 'etc' / 'preferences.d'}", f"-oAPT::Architecture={deb_arch}",
            f"-oAPT::Architectures::={deb_arch}", "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root"]
    _run(["apt-get", *opts, "-qq", "update"], f"apt-get update for {deb_arch}")
    wanted = [f"python{python}-minimal", f"libpython{python}-stdlib", "libstdc++6", "libgomp1"]
    out = _run(["apt-cache", *opts, "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                "--no-breaks", "--no-replaces", "--no-enhances", *wanted], f"resolving {' '.join(wanted)}")
    # Only what Python's runtime links against: skip package-management tools and perl.
    skip = {"dpkg", "install-info", "tar", "perl", "perl-base", "perl-modules-5.36", "libperl5.36", "debconf",
            "mailcap", "mime-support", "media-types"}
    pkgs = sorted({line.strip() for line in out.splitlines()
                   if line and not line.startswith((" ", "<")) and line.strip() not in skip})
    if f"python{python}-minimal" not in pkgs:
        raise EmulationError(f"python{python} is not in this host's Debian release for {deb_arch}; "
                             "set [device_runtime] python to the version it ships")
    debs = work / "debs"
    debs.mkdir()
    _run(["apt-get", *opts, "-qq", "download", *pkgs], f"downloading {len(pkgs)} {deb_arch} packages", cwd=debs)
    return sorted(debs.glob("*.deb"))


def _install_wheels(site: Path, wheels: Path, arch: str, python: str, reqs: list[str]) -> None:
    import zipfile

    platforms = [a for p in WHEEL_PLATFORMS[arch] for a in ("--platform", p)]
    tag = python.replace(".", "")
    _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", *platforms, "--python-version", python,
          "--implementation", "cp", "--abi", f"cp{tag}", "--abi", "abi3", "--abi", "none", "-d", str(wheels), *reqs],
         f"downloading {arch} wheels for {' '.join(reqs)}")
    site.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)


def run_device_runner(userland: Userland, bundle: Path, target: str, timeout: float = 3600,
                      artifacts: list[str] | None = None) -> dict:
    """Run `python -m edgepack.device verify` in the userland; returns its JSON result."""
    bundle = Path(bundle).resolve()
    with tempfile.TemporaryDirectory(prefix="edgepack-emulated-") as tmp:
        # Only edgepack's own pure-Python package goes in: the host's site-packages hold x86 builds.
        src = Path(tmp, "src")
        shutil.copytree(Path(__file__).resolve().parent.parent, src / "edgepack",
                        ignore=shutil.ignore_patterns("__pycache__", "_targets"))
        out = Path(tmp, "result.json")
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{src}:{userland.site_packages}", "PYTHONNOUSERSITE": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "EDGEPACK_EMULATED_CPU": userland.cpu, "HOME": tmp, "LANG": "C.UTF-8"}
        cmd = [userland.qemu, "-cpu", userland.cpu, "-L", str(userland.root), str(userland.root) + userland.python,
               "-m", "edgepack.device", "verify", str(bundle), "--target", target, "--json", str(out)]
        if artifacts:
            cmd += ["--artifacts", ",".join(artifacts)]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EmulationError(f"emulated verification of {target} took longer than {timeout:.0f} s") from None
        if not out.is_file():
            tail = " ".join((proc.stderr or proc.stdout).split())[-400:]
            raise EmulationError(f"the device runner did not finish under qemu ({userland.cpu}), "
                                 f"exit {proc.returncode}: {tail}")
        result = json.loads(out.read_text(encoding="utf-8"))
    result["emulation"] = {"qemu": _qemu_version(userland.qemu), "cpu": userland.cpu, **userland.versions}
    return result


def _qemu_version(qemu: str) -> str:
    try:
        return subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"
