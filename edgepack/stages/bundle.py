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
- only an edgepack bundle of that name and version (manifest.json with edgepack's schema)
  is ever replaced; anything else at the destination stops the build with one line;
- replacing is a swap: old → `.<name>-<version>.old-<pid>`, staging → final, then the old
  one is deleted; if the second rename fails the old one is put back (and if the process
  dies between the two, the next build puts it back).

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
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, OutputError
from ..manifest.jsonio import file_entry
from ..verification.calls import head, save_calls, save_npz

GOLDEN_NOTE = ("inputs: one array per model input (in_0, in_1, ... in model.inputs order), one entry per model call; "
               "reference outputs are the float baseline's, one array per model output (arr_0, arr_1, ...)")
STALE_HOURS = 24.0  # a staging area whose owner cannot be checked (another host) is removed after this
OWNER_FILE = "owner.json"
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
        (self.area / OWNER_FILE).write_text(json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started_utc": _now()}) + "\n", encoding="utf-8")
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
    `path` and tries again. Elsewhere: the `filelock` package (its file stays)."""
    try:
        import fcntl
    except ImportError:  # Windows
        return _filelock(path, final)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise _busy(final) from None
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return _FlockHeld(fd, path)
        os.close(fd)  # the holder released (and unlinked) it between our open and flock: again


class _FlockHeld:
    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    def release(self) -> None:
        try:
            os.unlink(self.path)  # while still held: see _lock
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


def _refuse_non_bundle(final: Path) -> None:
    """OutputError unless `final` is absent or an edgepack bundle named like it."""
    if not os.path.lexists(final):
        return
    what = "a symbolic link" if final.is_symlink() else ("a file" if not final.is_dir() else None)
    if what is None:
        try:
            doc = json.loads((final / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = None
        ours = (isinstance(doc, dict) and isinstance(doc.get("schema"), str)
                and doc["schema"].startswith("edgepack.manifest/")
                and f"{doc.get('name')}-{doc.get('version')}" == final.name)
        if ours:
            return
        what = f"a folder without an edgepack manifest.json for {final.name}"
    raise OutputError(f"{final}: exists and is {what}, not an edgepack bundle; edgepack replaces only bundles "
                      "it built: move it away, or choose another --out, --name or --version")


def clean_stale(final: Path) -> list[Path]:
    """Remove what killed builds of `final` left beside it (call with its lock held): staging
    areas whose build is gone, and the old bundle of an interrupted swap, put back when
    `final` is missing. Returns what was removed or restored."""
    done = []
    for p in sorted(final.parent.glob(f".{final.name}.staging-*")) + sorted(final.parent.glob(f".{final.name}.old-*")):
        staging = p.name.startswith(f".{final.name}.staging-")
        if not _stale(p, staging):
            continue
        if not staging and p.is_dir() and not os.path.lexists(final):
            os.rename(p, final)  # the swap was interrupted between its renames: the old bundle goes back
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        done.append(p)
    return done


def _stale(p: Path, staging: bool) -> bool:
    try:
        age_h = (time.time() - p.lstat().st_mtime) / 3600
    except OSError:
        return False
    if age_h > STALE_HOURS:
        return True
    if staging:
        try:
            owner = json.loads((p / OWNER_FILE).read_text(encoding="utf-8"))
            pid, host = int(owner["pid"]), owner.get("host")
        except (OSError, ValueError, KeyError, TypeError):
            return True  # killed before it wrote its owner file (areas are made under the lock)
        if host != socket.gethostname():
            return False
    else:
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            return False
    return not _alive(pid)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
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
