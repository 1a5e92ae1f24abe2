"""Names that become paths, and the files a bundle may hold. Standard library only.

Every name edgepack turns into a path (a target profile's name, a bundle's name and
version, an artifact's file name) must be one safe path component, and every path a
manifest or an archive names must be a relative path that stays inside its root. The
device runner (numpy only) and the host share these checks.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Files a bundle holds besides the ones its manifest lists: the manifest itself, the reports
# rendered from it, and the checksum and signature files written beside it.
UNLISTED_OK = frozenset({"manifest.json", "report.md", "report.html", "SHA256SUMS", "SHA256SUMS.sig", "manifest.sig"})
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
MAX_COMPONENT_BYTES = 255


def component_problem(name) -> str | None:
    """Why `name` is not one safe path component (a file or folder name), or None."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "is not a file or folder name"
    bad = [c for c in ("/", "\\", ":") if c in name]
    if bad:
        return f"contains {bad[0]!r}"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if name != name.strip() or name.endswith("."):
        return "starts or ends with a space, or ends with '.'"
    if name.split(".")[0].lower() in _WINDOWS_RESERVED:
        return "is a reserved device name on Windows"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
        return f"is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def relative_path_problem(path) -> str | None:
    """Why `path` is not a relative posix path inside its root (no absolute path, drive
    letter, backslash, NUL, empty, '.' or '..' part), or None."""
    if not isinstance(path, str):
        return f"expected a path string, got {type(path).__name__}"
    if not path:
        return "is empty"
    if path.startswith("/"):
        return "is an absolute path"
    if len(path) >= 2 and path[1] == ":" and path[0].isalpha():
        return "starts with a drive letter"
    for part in path.split("/"):
        if part == "..":
            return "climbs out of its folder ('..')"
        if part in ("", "."):
            return "has an empty or '.' part"
        why = component_problem(part)
        if why:
            return f"has a part {part!r} that {why}"
    return None


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symlink resolved, lies inside `root`."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
    except ValueError:
        return False
    return True


def listed_paths(manifest: dict) -> tuple[set[str], list[tuple[str, str]]]:
    """The bundle files a manifest lists (every {"path", "sha256", ...} entry), and the
    (path, why) of every bundle path in it that is not a safe relative path."""
    listed: set[str] = set()
    bad: list[tuple[str, str]] = []

    def walk(obj, key: str | None = None) -> None:
        if isinstance(obj, dict):
            path = obj.get("path")
            if "path" in obj and ("sha256" in obj or (key == "default" and path is not None)):
                why = relative_path_problem(path)
                if why:
                    bad.append((str(path), why))
                elif "sha256" in obj:
                    listed.add(path)
            for k, v in obj.items():
                if k != "source":  # the user's model as the config named it: not a bundle file
                    walk(v, k)
        elif isinstance(obj, list):
            for v in obj:
                walk(v, key)

    walk(manifest)
    return listed, bad


def file_entries(manifest: dict) -> dict[str, dict]:
    """path -> the first {"path", "sha256", "size_bytes", ...} entry naming it, over the whole
    manifest (the user's `source` left out: it is not a bundle file)."""
    entries: dict[str, dict] = {}

    def walk(obj):
        if isinstance(obj, dict):
            if isinstance(obj.get("path"), str) and "sha256" in obj and isinstance(obj.get("size_bytes"), int):
                entries.setdefault(obj["path"], obj)
            for k, v in obj.items():
                if k != "source":
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(manifest)
    return entries


def bundle_file_problems(root: Path, manifest: dict) -> list[tuple[str, str]]:
    """(where, reason) for everything in a bundle folder its manifest does not account for:
    manifest paths outside the bundle, symlinks, special files, files not listed."""
    root = Path(root)
    listed, bad = listed_paths(manifest)
    problems = [(p, f"manifest entry {why}, not a relative path inside the bundle") for p, why in bad]
    for p in sorted(listed):
        target = root / p
        if os.path.lexists(target) and not inside(root, target):
            problems.append((p, "resolves outside the bundle"))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            full = here / name
            rel = full.relative_to(root).as_posix()
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                problems.append((rel, "is a symbolic link (a bundle holds plain files only)"))
            elif stat.S_ISDIR(mode):
                continue
            elif not stat.S_ISREG(mode):
                problems.append((rel, "is not a regular file (device, pipe or socket)"))
            elif rel not in listed and rel not in UNLISTED_OK:
                problems.append((rel, "is not listed in the manifest"))
        dirnames[:] = [d for d in dirnames if not os.path.islink(here / d)]
    return problems


def special_file_problem(path) -> str | None:
    """Why `path` (followed if a link) cannot be read as a file without blocking: a FIFO,
    socket or device (reading a FIFO waits for a writer forever); None otherwise, or when it
    does not exist (the reader says so)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "is not a regular file (a pipe, socket or device)"
