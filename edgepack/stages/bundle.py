"""The bundle stage: the folder a release is assembled in and the reference files it carries.

A bundle is assembled next to its destination and renamed into place only when complete,
so an interrupted or failed build never leaves a folder that looks like a finished
release, and never loses the bundle it replaces:

- one build at a time per bundle: a lock on `<out>/.<name>-<version>.lock` (held, not
  waited for: a second build of the same bundle stops at once with one line; the file is
  removed when the build ends);
- each build has its own staging area `<out>/.<name>-<version>.staging-<pid>-<random>/`
  holding the bundle being assembled (`bundle/`), the build's temporary files (`tmp/`:
  every `tempfile` folder of the build goes there) and `owner.json` (pid, host, start);
  it is removed on any exit, and one left by a killed build (its pid gone, or older than
  `STALE_HOURS`) is removed by the next build of that bundle;
- only an edgepack bundle of that name and version is ever replaced: its manifest.json
  passes the full manifest schema and the folder holds nothing its manifest does not account
  for; anything else at the destination stops the build with one line naming it;
- replacing is a swap: old → `.<name>-<version>.old-<pid>`, staging → final, then the old
  one is deleted; if the second rename fails the old one is put back (and if the process
  dies between the two, the next build puts it back);
- only what edgepack provably made is ever removed beside the bundle: a staging area whose
  `owner.json` is edgepack's and which holds nothing else than edgepack puts there, an
  `.old-` folder that is itself a whole edgepack bundle, a lock file that is an empty
  regular file; a user's folder or file that merely has such a name is left alone.

Besides the artifacts a bundle holds the float baseline's golden inputs and outputs and the
evaluation subset with its float outputs, so a device can re-verify it from its own files
(`python -m edgepack.device verify`).
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, OutputError, and_more
from ..manifest.jsonio import MANIFEST_SCHEMA, SchemaMismatch, file_entry, read_json
from ..safepath import bundle_file_problems
from ..verification.calls import head, save_calls, save_npz

GOLDEN_NOTE = ("inputs: one array per model input (in_0, in_1, ... in model.inputs order), one entry per model call; "
               "reference outputs are the float baseline's, one array per model output (arr_0, arr_1, ...)")
STALE_HOURS = 24.0  # a staging area whose owner cannot be checked (another host) is removed after this
OWNER_FILE = "owner.json"
OWNER_TOOL = "edgepack.staging/1"  # owner.json's "tool": what marks a staging area as edgepack's
_STAGING_ENTRIES = frozenset({OWNER_FILE, "bundle", "tmp"})  # all a staging area ever holds
MAX_MANIFEST_BYTES = 64 << 20
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def created_utc() -> str:
    """The build's time, ISO 8601 to the second: SOURCE_DATE_EPOCH (reproducible builds)
    when set, else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None or not epoch.strip():
        return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    try:
        return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        raise ConfigError(f"SOURCE_DATE_EPOCH={epoch!r}: expected whole seconds since 1970-01-01 UTC") from None


class Staging:
    """Context manager: a locked, private staging area beside `final`; `path` is the bundle
    being assembled, `tmp` the build's scratch folder. `commit()` swaps `path` into place;
    leaving the block removes the staging area, commit or not, and releases the lock.

    While the block runs, `tempfile`'s default folder and $TMPDIR are `tmp` (so onnxruntime's
    and the converters' temporary files stay beside the output and go with it): not
    thread-safe, one build per process at a time. An OSError while writing (disk full, read-only,
    permission) leaves as an `OutputError` naming the folder, the previous bundle intact."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.parent = self.final.parent
        self.area: Path | None = None
        self.path: Path | None = None
        self.tmp: Path | None = None
        self._lock = None
        self._tempdir: list = []  # (tempfile.tempdir, $TMPDIR) before the block, when we set them

    def __enter__(self) -> "Staging":
        try:
            self._open()
        except OSError as exc:
            self._close()
            raise self._output_error(exc) from None
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self._close()
        if isinstance(exc, OSError):
            translated = self._output_error(exc, strict=True)
            if translated is not None:
                raise translated from None
        return False

    def commit(self) -> Path:
        final, old = self.final, None
        if os.path.lexists(final):
            _refuse_non_bundle(final)  # still one of ours to replace
            old = self.parent / f".{final.name}.old-{os.getpid()}"
            os.rename(final, old)
        try:
            os.rename(self.path, final)
        except BaseException:
            if old is not None:
                os.rename(old, final)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _open(self) -> None:
        if self.parent.exists() and not self.parent.is_dir():
            raise OutputError(f"{self.parent}: the output folder (--out) is a file; give a folder")
        _refuse_non_bundle(self.final)  # before anything is created beside it (and again under the lock)
        self.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.parent / f".{self.final.name}.lock", self.final)
        clean_stale(self.final)
        _refuse_non_bundle(self.final)
        self.area = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.staging-{os.getpid()}-", dir=self.parent))
        _write_owner(self.area)
        self.path, self.tmp = self.area / "bundle", self.area / "tmp"
        self.path.mkdir()
        self.tmp.mkdir()
        # Python's temporary folders, and those of native code and subprocesses started from
        # here ($TMPDIR: onnxruntime keeps a telemetry session file `.ses` there)
        self._tempdir = [(tempfile.tempdir, os.environ.get("TMPDIR"))]
        tempfile.tempdir = os.environ["TMPDIR"] = str(self.tmp)

    def _close(self) -> None:
        if self._tempdir:
            tempfile.tempdir, env = self._tempdir.pop()
            if env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = env
        if self.area is not None:
            shutil.rmtree(self.area, ignore_errors=True)
            self.area = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _output_error(self, exc: OSError, strict: bool = False) -> OutputError | None:
        """The one-line error for an OSError while writing the bundle; None (with `strict`)
        when it does not concern the output folder (e.g. an unreadable input file)."""
        where = exc.filename or exc.filename2
        inside = where is not None and _is_inside(Path(os.fsdecode(where)), self.parent)
        code = exc.errno
        kept = f"; {self.final} is unchanged" if os.path.isdir(self.final) else ""
        if code in _NO_SPACE:
            return OutputError(f"{self.parent}: no space left on the device while writing the bundle "
                               f"({exc.strerror or exc}{f': {where}' if where else ''}){kept}")
        if strict and not inside:
            return None
        if code == errno.EROFS:
            return OutputError(f"{self.parent}: read-only file system; cannot write the bundle there{kept}")
        if code in _NOT_WRITABLE:
            return OutputError(f"{where or self.parent}: permission denied; cannot write the bundle in {self.parent}"
                               f"{kept}")
        if code in (errno.ENOTDIR, errno.EEXIST):
            return OutputError(f"{where or self.parent}: a part of the output path is a file, not a folder")
        return OutputError(f"{where or self.parent}: cannot write the bundle ({exc.strerror or exc}){kept}")


def _lock(path: Path, final: Path):
    """The bundle's lock, held; OutputError at once if another build holds it.

    POSIX: flock on `path`, which the holder unlinks before it lets go (so no lock file is
    left behind); a build that locked a file unlinked meanwhile sees it is not the one at
    `path` and tries again. The lock is opened without following a symbolic link, and only
    an empty regular file of one link is taken as a lock (edgepack's never holds a byte):
    anything else at `path` is the user's and stops the build with one line naming it.
    Elsewhere: the `filelock` package (its file stays)."""
    try:
        import fcntl
    except ImportError:  # Windows
        _check_lock(path, final, os.lstat(path) if os.path.lexists(path) else None)
        return _filelock(path, final)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    while True:
        if os.path.lexists(path):  # a folder, pipe or device is never opened
            _check_lock(path, final, os.lstat(path))
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EMLINK):
                _check_lock(path, final, os.lstat(path) if os.path.lexists(path) else None)
                raise _not_a_lock(path, final, "not a regular file") from None
            raise
        try:
            _check_lock(path, final, os.fstat(fd))
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise _busy(final) from None
            raise
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if same:
            return _FlockHeld(fd, path)
        os.close(fd)  # the holder released (and unlinked) it between our open and flock: again


def _check_lock(path: Path, final: Path, st: os.stat_result | None) -> None:
    """OutputError unless `st` (of what is at the lock's path) is an edgepack lock file."""
    if st is None:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _not_a_lock(path, final, "a symbolic link")
    if stat.S_ISDIR(st.st_mode):
        raise _not_a_lock(path, final, "a folder")
    if not stat.S_ISREG(st.st_mode):
        raise _not_a_lock(path, final, "not a regular file (a pipe, socket or device)")
    if st.st_size:
        raise _not_a_lock(path, final, f"a file of {st.st_size} bytes (edgepack's lock file is empty)")
    if st.st_nlink > 1:
        raise _not_a_lock(path, final, "a file with other hard links")


def _not_a_lock(path: Path, final: Path, what: str) -> OutputError:
    return OutputError(f"{path}: is {what}, not edgepack's lock file for {final.name}; edgepack neither follows nor "
                       "replaces it: move it away, or choose another --out, --name or --version")


class _FlockHeld:
    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    def release(self) -> None:
        try:
            if os.path.samestat(os.fstat(self.fd), os.lstat(self.path)):  # still ours: see _lock
                os.unlink(self.path)  # while still held
        except OSError:
            pass
        finally:
            os.close(self.fd)


def _filelock(path: Path, final: Path):
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise _busy(final) from None
    return lock


def _busy(final: Path) -> OutputError:
    pids = sorted({p.name.split("-")[-2] for p in final.parent.glob(f".{final.name}.staging-*")})
    who = f" (pid {', '.join(pids)})" if pids else ""
    return OutputError(f"{final}: another edgepack build is writing this bundle{who}; wait for it to finish, "
                       "or build into another --out or --version")


_REPLACE_ONLY = "edgepack replaces only bundles it built: move it away, or choose another --out, --name or --version"


def bundle_problem(folder: Path, name: str | None = None) -> str | None:
    """Why `folder` is not a whole edgepack bundle named `name` (default: the folder's name),
    as the end of a sentence that starts with the folder, or None when it is one: its
    manifest.json passes the full manifest schema, names `name`, and the folder holds nothing
    its manifest does not account for (no unlisted file, symbolic link or special file)."""
    from pydantic import ValidationError

    from ..manifest.models import Manifest

    folder = Path(folder)
    name = name or folder.name
    if not os.path.lexists(folder):
        return "does not exist"
    if os.path.islink(folder):
        return f"exists and is a symbolic link, not an edgepack bundle; {_REPLACE_ONLY}"
    if not os.path.isdir(folder):
        return f"exists and is a file, not an edgepack bundle; {_REPLACE_ONLY}"
    path = folder / "manifest.json"
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        return f"exists and is a folder without an edgepack manifest.json for {name}, not an edgepack bundle; " \
               f"{_REPLACE_ONLY}"
    try:
        if st.st_size > MAX_MANIFEST_BYTES:
            raise ValueError("too large")
        doc = read_json(path, MANIFEST_SCHEMA)
        Manifest.model_validate(doc)
    except (SchemaMismatch, ValueError, ValidationError, OSError, RecursionError, TypeError):
        return f"exists and is a folder whose manifest.json is not a complete edgepack manifest for {name}, " \
               f"not an edgepack bundle; {_REPLACE_ONLY}"
    if f"{doc.get('name')}-{doc.get('version')}" != name:
        return f"exists and is a folder whose manifest.json is for {doc.get('name')}-{doc.get('version')}, not " \
               f"{name}; {_REPLACE_ONLY}"
    try:
        problems = bundle_file_problems(folder, doc)
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        return f"cannot be read whole ({exc}), so it is not replaced; {_REPLACE_ONLY}"
    if problems:
        where, why = problems[0]
        more = and_more(problems)
        if why == "is not listed in the manifest":
            return f"holds {where}, which its manifest does not list{more}: move it or choose another --out"
        return f"holds {where}, which {why.removeprefix('is ')}{more}; its manifest does not account for it: " \
               "move it or choose another --out"
    return None


def _refuse_non_bundle(final: Path) -> None:
    """OutputError unless `final` is absent or a whole edgepack bundle named like it."""
    if not os.path.lexists(final):
        return
    why = bundle_problem(final)
    if why:
        raise OutputError(f"{final}: {why}")


def _write_owner(area: Path) -> None:
    """The staging area's owner.json: what marks it as edgepack's (see `_owned_staging`)."""
    doc = {"tool": OWNER_TOOL, "pid": os.getpid(), "host": socket.gethostname(), "started_utc": _now()}
    fd = os.open(area / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc) + "\n")


def _name_pid(p: Path, prefix: str, rest: str) -> int | None:
    """The pid in a name `prefix<pid><rest>` (rest a regex), or None when it is not such a name."""
    import re

    m = re.fullmatch(re.escape(prefix) + r"([0-9]{1,10})" + rest, p.name)
    return int(m.group(1)) if m else None


def _owned_staging(p: Path, final: Path) -> dict | None:
    """The owner of a staging area edgepack made for `final` (its owner.json), or None when
    `p` is not provably one: a real folder named as `Staging` names them, holding nothing but
    owner.json, bundle/ and tmp/, and an owner.json of edgepack's whose pid is the name's."""
    pid = _name_pid(p, f".{final.name}.staging-", r"-[A-Za-z0-9_]+")
    if pid is None or os.path.islink(p) or not p.is_dir():
        return None
    try:
        entries = {e.name: e for e in os.scandir(p)}
        owner_file = entries.get(OWNER_FILE)
        if owner_file is None or not owner_file.is_file(follow_symlinks=False) or set(entries) - _STAGING_ENTRIES:
            return None
        if any(not entries[d].is_dir(follow_symlinks=False) for d in ("bundle", "tmp") if d in entries):
            return None
        if owner_file.stat(follow_symlinks=False).st_size > 4096:
            return None
        owner = json.loads((p / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict) or type(owner.get("pid")) is not int or owner["pid"] != pid \
            or not isinstance(owner.get("host"), str):
        return None
    tool = owner.get("tool")
    # edgepack before the "tool" marker wrote exactly pid, host and started_utc
    if tool != OWNER_TOOL and not (tool is None and set(owner) <= {"pid", "host", "started_utc"}):
        return None
    return owner


def _empty_dir(p: Path) -> bool:
    try:
        return not os.path.islink(p) and p.is_dir() and not any(os.scandir(p))
    except OSError:
        return False


def clean_stale(final: Path) -> list[Path]:
    """Remove what killed builds of `final` left beside it (call with its lock held): staging
    areas whose build is gone, and the old bundle of an interrupted swap, put back when
    `final` is missing. Returns what was removed or restored.

    Only what edgepack provably made is touched: a staging area by `_owned_staging` (or an
    empty one, made by a build killed before it wrote its owner.json), an `.old-<pid>`
    folder that is a whole edgepack bundle for `final` (or empty). A user's file or folder
    that merely has such a name is left alone."""
    done = []
    parent = final.parent
    for p in sorted(parent.glob(f".{final.name}.staging-*")):
        owner = _owned_staging(p, final)
        if owner is not None:
            if not _stale_owner(p, owner):
                continue
            shutil.rmtree(p, ignore_errors=True)
        else:
            pid = _name_pid(p, f".{final.name}.staging-", r"-[A-Za-z0-9_]+")
            if pid is None or not _empty_dir(p) or not _stale_pid(p, pid):
                continue
            _rmdir(p)
        done.append(p)
    for p in sorted(parent.glob(f".{final.name}.old-*")):
        pid = _name_pid(p, f".{final.name}.old-", "")
        if pid is None or os.path.islink(p) or not p.is_dir() or not _stale_pid(p, pid):
            continue
        if _empty_dir(p):
            _rmdir(p)
        elif bundle_problem(p, final.name) is not None:
            continue  # not provably a bundle edgepack moved aside: the user's
        elif not os.path.lexists(final):
            os.rename(p, final)  # the swap was interrupted between its renames: the old bundle goes back
        else:
            shutil.rmtree(p, ignore_errors=True)
        done.append(p)
    return done


def _rmdir(p: Path) -> None:
    try:
        os.rmdir(p)  # only ever an empty folder
    except OSError:
        pass


def _age_hours(p: Path) -> float | None:
    try:
        return (time.time() - p.lstat().st_mtime) / 3600
    except OSError:
        return None


def _stale_owner(p: Path, owner: dict) -> bool:
    """Whether the build that owns staging area `p` is gone (or the area older than STALE_HOURS)."""
    age_h = _age_hours(p)
    if age_h is None:
        return False
    if age_h > STALE_HOURS:
        return True
    if owner["host"] != socket.gethostname():
        return False
    return not _alive(owner["pid"])


def _stale_pid(p: Path, pid: int) -> bool:
    age_h = _age_hours(p)
    if age_h is None:
        return False
    return age_h > STALE_HOURS or not _alive(pid)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return True  # not one process: never taken as gone
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except (PermissionError, OSError):
        return True
    return True


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_reference_data(root: Path, data, outputs: list[np.ndarray], golden_samples: int) -> tuple[dict, dict]:
    """Golden inputs with float outputs, and the bundled eval subset with float outputs.

    `data`: the evaluation Dataset (model calls per input name, labels); `outputs`: the
    float baseline's outputs over all its calls, concatenated along axis 0. Returns the
    manifest's `golden` and `reference_data` blocks."""
    golden_dir, data_dir = root / "golden", root / "data"
    golden_dir.mkdir()
    data_dir.mkdir()
    calls, batch = data.n_calls, data.batch
    g = min(calls, max(1, golden_samples // batch))
    rows = [len(o) // calls for o in outputs]  # output rows per call
    save_calls(golden_dir / "inputs.npz", head(data.calls, g))
    save_npz(golden_dir / "reference_outputs.npz", *[o[: g * r] for o, r in zip(outputs, rows)])
    save_calls(data_dir / "eval.npz", data.calls, data.y)
    save_npz(data_dir / "eval_reference_outputs.npz", *outputs)
    golden = {"inputs": file_entry(golden_dir / "inputs.npz", root),
              "reference_outputs": file_entry(golden_dir / "reference_outputs.npz", root),
              "samples": int(g * batch), "note": GOLDEN_NOTE}
    reference = {"eval": file_entry(data_dir / "eval.npz", root),
                 "eval_reference_outputs": file_entry(data_dir / "eval_reference_outputs.npz", root)}
    return golden, reference
