"""Facts about the machine that measured a number: CPU name, ISA, usable cores."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def host_info() -> dict:
    name, flags = platform.processor() or "unknown", []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and name in ("unknown", "", platform.machine()):
                name = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = value.split()
    interesting = [f for f in flags if "vnni" in f or f in ("avx2", "avx512f", "asimddp", "i8mm", "asimd")]
    emulated = os.environ.get("EDGEPACK_EMULATED_CPU")
    if emulated:
        # qemu-user passes the host's /proc/cpuinfo through: describe the emulated CPU instead.
        name, interesting = f"{emulated} (emulated by qemu-user on {name})", []
    machine = platform.machine().lower()
    return {
        "cpu": name,
        "arch": {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine),
        "cores": usable_cores(),
        "isa": sorted(interesting),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def tool_versions(packages: list[str]) -> dict:
    """edgepack's and Python's versions plus each named distribution's (None if absent)."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out = {"edgepack": __version__, "python": platform.python_version()}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
