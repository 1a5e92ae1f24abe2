"""Release archives: `edgepack pack BUNDLE` and `edgepack verify ARCHIVE.tar.gz`.

An archive is a reproducible `.tar.gz` of one bundle folder: entries sorted, every mtime the
same (`SOURCE_DATE_EPOCH`, else the manifest's creation time), owner and group 0 with no
names, modes 0644 (files) and 0755 (folders), and a gzip header without name or time. Its
sha256 is written beside it as `FILE.sha256` (the `sha256sum` format).

Reading one is reading untrusted input: every entry is checked before anything is written
(one top folder, relative paths that stay inside it, plain files and folders only, no
duplicates, every file listed in the archive's manifest), and extraction uses tarfile's
`data` filter as a second line. Standard library only.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BundleError, and_more, one_line
from .manifest.jsonio import MANIFEST_SCHEMA, SchemaMismatch, check_schema, read_json, sha256_file
from .safepath import (
    UNLISTED_OK,
    bundle_file_problems,
    component_problem,
    file_entries,
    listed_paths,
    relative_path_problem,
)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
MAX_MANIFEST_BYTES = 64 << 20
# What an archive may expand to, checked from each entry's header before its data is read (a
# gzip bomb is refused before it is decompressed, let alone written): this many times the
# archive's own size plus a fixed allowance. Model weights compress little (int8 and float
# artifacts 1.0-1.5x measured); a bundle of all-zero tensors would still fit under 100x.
MAX_EXPANSION = 100
EXPANSION_ALLOWANCE = 256 << 20
MAX_ENTRIES = 100_000
# What `pack` replaces at its destination: only an archive it wrote (a gzip'd tar whose first
# entry is a `<name>-<version>/` folder holding manifest.json, judged from the first headers)
# and only a checksum file it wrote (one `<sha256>  <archive name>` line).
PROBE_HEADERS = 64
MAX_SHA256_FILE_BYTES = 4096
_SHA256_LINE = re.compile(r"([0-9a-f]{64})  ([^\n/\\]+)\n?")
_KEEP = "edgepack replaces only an archive and checksum file it wrote: move it away, or choose another --out"


def is_archive(path: Path) -> bool:
    return Path(path).name.endswith(ARCHIVE_SUFFIXES) and Path(path).is_file()


def _mtime(manifest: dict) -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env is not None:
        try:
            return max(0, int(env))
        except ValueError:
            raise BundleError(f"SOURCE_DATE_EPOCH={env!r} is not an integer number of seconds") from None
    created = manifest.get("created_utc")
    if isinstance(created, str):
        try:
            stamp = _dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=_dt.timezone.utc)
            return max(0, int(stamp.timestamp()))
        except ValueError:
            pass
    return 0


def pack(bundle: Path | str, out: Path | str | None = None) -> tuple[Path, str]:
    """Write a reproducible `.tar.gz` of a bundle and `FILE.sha256` beside it; (path, sha256).

    The bundle must hold exactly what its manifest lists (plus manifest.json, the reports and
    checksum/signature files); anything else is refused rather than left out or shipped."""
    root = Path(bundle)
    if not (root / "manifest.json").is_file():
        raise BundleError(f"{root}: no manifest.json; expected an edgepack bundle folder")
    try:
        manifest = read_json(root / "manifest.json", MANIFEST_SCHEMA)
    except (SchemaMismatch, ValueError, OSError) as exc:
        raise BundleError(str(exc)) from None
    top = f"{manifest.get('name')}-{manifest.get('version')}"
    if component_problem(top):
        raise BundleError(f"{root / 'manifest.json'}: name and version {top!r} do not make a folder name")
    problems = bundle_file_problems(root, manifest)
    if problems:
        where, why = problems[0]
        more = and_more(problems)
        raise BundleError(f"{root}: not packed: {where} {why}{more}")
    listed, _ = listed_paths(manifest)
    missing = [p for p in sorted(listed) if not (root / p).is_file()]
    if missing:
        raise BundleError(f"{root}: not packed: {missing[0]} is listed in the manifest but missing")
    out = Path(out) if out is not None else root.parent / f"{top}.tar.gz"
    if not out.name.endswith(ARCHIVE_SUFFIXES):
        raise BundleError(f"{out}: an archive's name ends in .tar.gz or .tgz")
    if out.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"{out}: the archive cannot go inside the bundle it packs")
    check_pack_destination(out)  # before anything is written
    files = sorted(listed | {n for n in UNLISTED_OK if (root / n).is_file()})
    folders = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
    mtime = _mtime(manifest)

    def info(name: str, is_dir: bool, size: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(f"{top}/{name}" if name else top)
        ti.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        ti.mode, ti.size, ti.mtime = (0o755 if is_dir else 0o644), size, mtime
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    entries = sorted([(f, True) for f in ["", *folders]] + [(f, False) for f in files],
                     key=lambda e: f"{top}/{e[0]}" if e[0] else top)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as raw:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime, compresslevel=9) as gz:
                    with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                        for name, is_dir in entries:
                            if is_dir:
                                tar.addfile(info(name, True))
                            else:
                                with open(root / name, "rb") as f:
                                    tar.addfile(info(name, False, os.fstat(f.fileno()).st_size), f)
            digest = sha256_file(Path(tmp))
            os.chmod(tmp, 0o644)
            sha_fd, sha_tmp = tempfile.mkstemp(prefix=f".{out.name}.sha256.", suffix=".tmp", dir=out.parent)
            try:
                with os.fdopen(sha_fd, "w", encoding="utf-8") as f:
                    f.write(f"{digest}  {out.name}\n")
                os.chmod(sha_tmp, 0o644)
                os.replace(tmp, out)  # a rename: never follows a link at the destination
                os.replace(sha_tmp, f"{out}.sha256")
            except BaseException:
                Path(sha_tmp).unlink(missing_ok=True)
                raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise BundleError(f"{exc.filename or out}: cannot write the archive ({exc.strerror or exc})") from None
    return out, digest


def check_pack_destination(out: Path | str) -> None:
    """BundleError naming the path unless `out` and `out.sha256` may be written: each absent,
    or an archive (checksum file) edgepack wrote. Nothing is followed or written: a symbolic
    link, a folder or any other file there stops the pack (and `build --archive` before it
    builds)."""
    out = Path(out)
    if not out.name.endswith(ARCHIVE_SUFFIXES):
        raise BundleError(f"{out}: an archive's name ends in .tar.gz or .tgz")
    why = _archive_destination_problem(out)
    if why:
        raise BundleError(f"{out}: {why}; {_KEEP}")
    sha = Path(f"{out}.sha256")
    why = _sha256_destination_problem(sha, out.name)
    if why:
        raise BundleError(f"{sha}: {why}; {_KEEP}")


def _kind(st: os.stat_result) -> str | None:
    """What a path that must be a plain file is instead, or None for a regular file."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder where the file would go"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a pipe, socket or device)"
    return None


def _existing(path: Path) -> tuple[os.stat_result | None, str | None]:
    """(lstat of `path` or None when absent, why it cannot be a file edgepack replaces)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot be checked ({exc.strerror or exc})"
    return st, _kind(st)


def _archive_destination_problem(out: Path) -> str | None:
    st, why = _existing(out)
    if st is None or why:
        return why
    not_ours = "exists and is not an archive written by `edgepack pack`"
    limit = MAX_EXPANSION * st.st_size + EXPANSION_ALLOWANCE
    try:
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as raw:
            if not stat.S_ISREG(os.fstat(raw.fileno()).st_mode) or raw.read(2) != b"\x1f\x8b":
                return not_ours
            raw.seek(0)
            with tarfile.open(fileobj=raw, mode="r|gz") as tar:
                top, total = None, 0
                for i, m in enumerate(tar):  # headers in order; stops at the manifest or after a few
                    if i >= PROBE_HEADERS:
                        return not_ours
                    total += max(m.size, 0)
                    if total > limit:
                        return not_ours
                    name = m.name.rstrip("/")
                    if top is None:
                        if not m.isdir() or component_problem(name) or "-" not in name:
                            return not_ours
                        top = name
                    elif name == f"{top}/manifest.json":
                        return None if m.isfile() else not_ours
                    elif not name.startswith(f"{top}/"):
                        return not_ours
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error):
        return not_ours
    return not_ours


def _sha256_destination_problem(sha: Path, archive_name: str) -> str | None:
    st, why = _existing(sha)
    if st is None or why:
        return why
    not_ours = f"exists and is not the checksum file `edgepack pack` writes for {archive_name}"
    if st.st_size > MAX_SHA256_FILE_BYTES:
        return not_ours
    try:
        fd = os.open(sha, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            text = f.read(MAX_SHA256_FILE_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return not_ours
    m = _SHA256_LINE.fullmatch(text)
    if m is None or m.group(2) != archive_name:
        return not_ours
    return None


@dataclass
class Extracted:
    """An archive's bundle extracted into `tmp`, or the entries that were refused."""

    bundle: Path | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)


def extract(archive: Path | str, dest: Path) -> Extracted:
    """Check every entry of `archive`, then extract its bundle under `dest` (a fresh folder).

    Problems with entries are returned (the caller fails verification, naming them); an
    archive that cannot be read at all, or whose manifest cannot be read, is a BundleError."""
    archive = Path(archive)
    try:
        tar = tarfile.open(archive, mode="r:*")
    except tarfile.ReadError:
        raise BundleError(f"{archive}: not a .tar.gz archive (or a damaged one)") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{archive}: cannot read the archive ({one_line(exc, 200)})") from None
    limit = MAX_EXPANSION * archive.stat().st_size + EXPANSION_ALLOWANCE
    with tar:
        members, total = [], 0
        try:
            for m in tar:  # headers one by one: an entry's declared size is judged before its data is read
                total += max(m.size, 0)
                if total > limit:
                    raise BundleError(f"{archive}: its entries declare {total} bytes by {m.name!r}, more than "
                                      f"{MAX_EXPANSION}x the archive's size plus {EXPANSION_ALLOWANCE >> 20} MiB "
                                      "(a bundle's files compress little): refused as a decompression bomb")
                if len(members) >= MAX_ENTRIES:
                    raise BundleError(f"{archive}: more than {MAX_ENTRIES} entries; not a bundle archive")
                members.append(m)
        except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
            raise BundleError(f"{archive}: a damaged .tar.gz archive ({one_line(exc, 200)})") from None
        problems: list[tuple[str, str]] = []
        tops, seen, files = set(), set(), {}
        for m in members:
            name = m.name[2:] if m.name.startswith("./") else m.name
            name = name.rstrip("/") if m.isdir() else name
            why = relative_path_problem(name)
            if why:
                problems.append((m.name, f"{why}: it would land outside the extraction folder"))
                continue
            if m.issym() or m.islnk():
                problems.append((m.name, f"is a {'symbolic' if m.issym() else 'hard'} link to {m.linkname!r} "
                                         "(a bundle archive holds plain files only)"))
                continue
            if not (m.isfile() or m.isdir()):
                problems.append((m.name, "is a device, pipe or other special entry"))
                continue
            if name in seen:
                problems.append((m.name, "appears twice"))
                continue
            seen.add(name)
            top, _, rest = name.partition("/")
            tops.add(top)
            if m.isfile():
                if not rest:
                    problems.append((m.name, "is a file outside the bundle's folder"))
                else:
                    files[rest] = m
        if problems:
            return Extracted(problems=problems)
        if len(tops) != 1:
            raise BundleError(f"{archive}: expected one bundle folder, found {len(tops)} top-level entries")
        (top,) = tops
        mm = files.get("manifest.json")
        if mm is None:
            raise BundleError(f"{archive}: no {top}/manifest.json; expected an archive made by `edgepack pack`")
        if mm.size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{archive}: {top}/manifest.json is too large to be a manifest ({mm.size} bytes)")
        try:
            doc = json.loads(tar.extractfile(mm).read().decode("utf-8"))
            check_schema(doc, MANIFEST_SCHEMA, f"{archive}:{top}/manifest.json")
        except SchemaMismatch as exc:
            raise BundleError(str(exc)) from None
        except (ValueError, UnicodeDecodeError, tarfile.TarError, OSError) as exc:
            raise BundleError(f"{archive}: {top}/manifest.json is not a readable manifest ({one_line(exc, 200)})") \
                from None
        listed, bad = listed_paths(doc)
        problems = [(p, f"manifest entry {why}, not a relative path inside the bundle") for p, why in bad]
        problems += [(f"{top}/{rest}", "is not listed in the archive's manifest")
                     for rest in sorted(files) if rest not in listed and rest not in UNLISTED_OK]
        sizes = {path: e["size_bytes"] for path, e in file_entries(doc).items()}
        problems += [(f"{top}/{rest}", f"declares {m.size} bytes; the manifest lists {sizes[rest]}")
                     for rest, m in sorted(files.items()) if rest in sizes and m.size != sizes[rest]]
        if problems:
            return Extracted(problems=problems)
        try:
            free = shutil.disk_usage(dest).free
        except OSError:
            free = None
        if free is not None and total > free:
            raise BundleError(f"{archive}: extracting needs {total} bytes; {dest} has {free} free")
        try:
            tar.extractall(dest, members=[m for m in members], filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{archive}: extracting failed ({one_line(exc, 200)})") from None
    return Extracted(bundle=Path(dest) / top)
