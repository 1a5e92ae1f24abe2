"""What is at or beside the output is the user's unless edgepack provably wrote it.

A destination folder is replaced only when it is a whole edgepack bundle (a manifest that
passes the full schema, nothing in the folder it does not account for); leftovers beside it
are removed only when they are edgepack's (a staging area with edgepack's owner.json, a
swapped-out bundle); the lock file is never followed; an archive and its `.sha256` replace
only an archive and checksum file edgepack wrote, and `build --archive` checks them before it
builds. Each refusal is exit 2 with one `error:` line naming the path, no traceback, the
user's files byte-identical and nothing created outside `--out`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import PY, cli, explain
from test_release_safety import Sandbox as ReleaseSandbox
from test_release_safety import _place as place_bundle
from test_release_safety import one_error

NAME = "tiny-0.1.0"
RUNS = ("--latency-runs", "2", "--search-trials", "0")


# ---------------------------------------------------------------------------------------
# Helpers (as in test_release_safety)


def tree_digest(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: a file's sha256, a link's target, a folder as such."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir" if p.is_dir() else "other"
    return out


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".staging-" in p.name or ".old-" in p.name
                  or p.name.endswith(".lock") or p.name.endswith(".tmp"))


def _dead_pid() -> int:
    proc = subprocess.Popen([PY, "-c", "pass"])
    proc.wait()
    return proc.pid


class Sandbox(ReleaseSandbox):
    """test_release_safety's sandbox, building with extra flags and running any command in it."""

    def build(self, *extra: str):
        return cli("build", "--onnx", self.model, "--calib", self.calib, "--targets", "x86-64",
                   "--out", self.out, *RUNS, *extra, cwd=self.work, env=self.env)

    def cli(self, *args):
        return cli(*args, cwd=self.work, env=self.env)

    def nothing_outside(self, *allowed: str) -> None:
        """As the base's, `allowed` naming what the test itself put beside the output."""
        super().nothing_outside(*(self.root / a for a in allowed))


@pytest.fixture
def box(tmp_path, tiny_model, tiny_calib) -> Sandbox:
    return Sandbox(tmp_path, tiny_model, tiny_calib)


def _place(old_bundle: Path, out: Path) -> Path:
    place_bundle(old_bundle, out)
    return out / NAME


# ---------------------------------------------------------------------------------------
# O06, O16: the destination is replaced only when it is a whole edgepack bundle


def test_a_folder_with_a_minimal_fake_manifest_is_never_replaced(box):
    dest = box.out / NAME
    dest.mkdir(parents=True)
    (dest / "manifest.json").write_text(json.dumps({"schema": "edgepack.manifest/2", "name": "tiny",
                                                    "version": "0.1.0"}))
    (dest / "thesis.tex").write_text("\\chapter{Years of work}\n")
    before = tree_digest(box.out)
    one_error(box.build(), str(dest), "not a complete edgepack manifest")
    assert tree_digest(box.out) == before  # nothing made beside it either
    box.nothing_outside()


def test_a_bundle_holding_a_user_file_is_never_replaced(box, old_bundle):
    dest = _place(old_bundle, box.out)
    (dest / "thesis.tex").write_text("\\chapter{Years of work}\n")
    before = tree_digest(box.out)
    line = one_error(box.build(), str(dest), "holds thesis.tex, which its manifest does not list")
    assert "--out" in line
    assert tree_digest(box.out) == before
    box.nothing_outside()


def test_a_bundle_holding_a_symlink_is_never_replaced(box, old_bundle):
    dest = _place(old_bundle, box.out)
    elsewhere = box.root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    (dest / "mine").symlink_to(elsewhere, target_is_directory=True)
    before, before_elsewhere = tree_digest(box.out), tree_digest(elsewhere)
    one_error(box.build(), str(dest), "holds mine", "symbolic link")
    assert tree_digest(box.out) == before and tree_digest(elsewhere) == before_elsewhere
    box.nothing_outside("elsewhere")


def test_a_whole_bundle_is_still_replaced(box, old_bundle):
    """The rule keeps its other half: edgepack's own bundle is replaced (and leaves nothing beside)."""
    dest = _place(old_bundle, box.out)
    old_manifest = (dest / "manifest.json").read_text()
    proc = box.build()
    assert proc.returncode == 0, explain(proc)
    assert (dest / "manifest.json").read_text() != old_manifest
    assert leftovers(box.out) == []
    box.nothing_outside()


# ---------------------------------------------------------------------------------------
# O08, O09: only edgepack's leftovers are removed beside the bundle


def test_user_folders_named_like_leftovers_are_kept(box, old_bundle):
    """A user's `.old-<dead pid>` and `.staging-*` folders (with and without an owner.json
    that is not edgepack's) survive a build; the build itself succeeds."""
    box.out.mkdir()
    dead = _dead_pid()
    user = {
        f".{NAME}.old-999999": {"precious.txt": "x"},
        f".{NAME}.old-{dead}": {"precious.txt": "y"},
        f".{NAME}.staging-backup": {"precious.txt": "z"},
        f".{NAME}.staging-{dead}-abcdefgh": {"precious.txt": "w",
                                            "owner.json": json.dumps({"pid": dead, "host": "h"})},
        f".{NAME}.staging-{dead}-ijklmnop": {"owner.json": json.dumps({"note": "mine"})},
    }
    for folder, files in user.items():
        (box.out / folder).mkdir()
        for name, text in files.items():
            (box.out / folder / name).write_text(text)
    (box.out / f".{NAME}.old-{dead}.txt").write_text("a file named like a leftover")
    before = {n: tree_digest(box.out / n) for n in user}
    proc = box.build()
    assert proc.returncode == 0, explain(proc)
    assert "Traceback" not in proc.stderr
    assert (box.out / NAME / "manifest.json").is_file()
    for folder in user:
        assert tree_digest(box.out / folder) == before[folder], folder
    assert (box.out / f".{NAME}.old-{dead}.txt").read_text() == "a file named like a leftover"
    box.nothing_outside()


def test_a_user_old_folder_is_not_put_in_place_of_a_missing_bundle(tmp_path):
    """Unit: a `.old-<dead pid>` folder that is not a whole bundle is neither renamed into
    place nor removed, even when the bundle is missing."""
    from edgepack.stages.bundle import clean_stale

    aside = tmp_path / f".{NAME}.old-{_dead_pid()}"
    aside.mkdir()
    (aside / "manifest.json").write_text(json.dumps({"schema": "edgepack.manifest/2", "name": "tiny",
                                                     "version": "0.1.0"}))
    (aside / "precious.txt").write_text("x")
    before = tree_digest(aside)
    assert clean_stale(tmp_path / NAME) == []
    assert tree_digest(aside) == before and not (tmp_path / NAME).exists()


def test_edgepacks_own_leftovers_are_still_removed(tmp_path, old_bundle):
    """Unit: a killed build's staging area (edgepack's owner.json), an empty one (killed before
    its owner.json), and a swapped-out copy of the bundle are removed; a live one is kept."""
    import socket

    from edgepack.stages.bundle import OWNER_TOOL, clean_stale

    final = _place(old_bundle, tmp_path)
    dead = _dead_pid()
    here = socket.gethostname()

    def area(suffix: str, pid: int) -> Path:
        p = tmp_path / f".{NAME}.staging-{suffix}"
        (p / "bundle").mkdir(parents=True)
        (p / "tmp" / "edgepack-x").mkdir(parents=True)
        (p / "tmp" / "edgepack-x" / "scratch.bin").write_bytes(b"\0" * 8)
        (p / "owner.json").write_text(json.dumps({"tool": OWNER_TOOL, "pid": pid, "host": here,
                                                  "started_utc": "2024-01-01T00:00:00+00:00"}))
        return p

    gone = area(f"{dead}-aaaaaaaa", dead)
    live = area(f"{os.getpid()}-bbbbbbbb", os.getpid())
    empty = tmp_path / f".{NAME}.staging-{dead}-cccccccc"
    empty.mkdir()
    swapped_out = tmp_path / f".{NAME}.old-{dead}"
    shutil.copytree(old_bundle, swapped_out)
    removed = clean_stale(final)
    assert sorted(removed) == sorted([gone, empty, swapped_out])
    assert live.is_dir() and final.is_dir()
    assert not gone.exists() and not empty.exists() and not swapped_out.exists()


def test_a_staging_area_holds_edgepacks_owner_marker(tmp_path):
    from edgepack.stages.bundle import OWNER_TOOL, Staging

    with Staging(tmp_path / NAME) as staging:
        owner = json.loads((staging.area / "owner.json").read_text())
        assert owner["tool"] == OWNER_TOOL and owner["pid"] == os.getpid()
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------
# O07: the lock file is never followed


@pytest.mark.parametrize("kind", ["link-to-missing", "link-to-file", "user-file", "folder"])
def test_a_lock_path_that_is_not_edgepacks_lock(box, old_bundle, kind):
    dest = _place(old_bundle, box.out)
    lock = box.out / f".{NAME}.lock"
    outside = box.root / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    if kind == "link-to-missing":
        lock.symlink_to(victim)
    elif kind == "link-to-file":
        victim.write_text("keep me")
        lock.symlink_to(victim)
    elif kind == "user-file":
        lock.write_text("my notes")
    else:
        lock.mkdir()
        (lock / "keep.txt").write_text("keep")
    before, before_outside = tree_digest(box.out), tree_digest(outside)
    one_error(box.build(), str(lock))
    assert tree_digest(box.out) == before and tree_digest(outside) == before_outside
    assert tree_digest(dest) == tree_digest(old_bundle)
    box.nothing_outside("outside")


# ---------------------------------------------------------------------------------------
# O17, O19, O18: `build --archive` checks the archive's place before it builds


@pytest.mark.parametrize("what", ["archive-folder", "sha256-folder", "sha256-user-file", "archive-user-file",
                                  "archive-link"])
def test_build_archive_destination_is_checked_before_the_build(box, old_bundle, what):
    dest = _place(old_bundle, box.out)
    archive = box.out / f"{NAME}.tar.gz"
    sha = box.out / f"{NAME}.tar.gz.sha256"
    outside = box.root / "outside"
    outside.mkdir()
    (outside / "data.tar.gz").write_bytes(b"not mine to replace")
    named = archive
    if what == "archive-folder":
        archive.mkdir()
        (archive / "keep.txt").write_text("keep")
    elif what == "sha256-folder":
        sha.mkdir()
        named = sha
    elif what == "sha256-user-file":
        sha.write_text("my checksums\nand more\n")
        named = sha
    elif what == "archive-user-file":
        archive.write_bytes(b"my own bytes, not an archive")
    else:
        archive.symlink_to(outside / "data.tar.gz")
    before, before_outside = tree_digest(box.out), tree_digest(outside)
    one_error(box.build("--archive"), str(named))
    assert tree_digest(box.out) == before  # the old bundle untouched: refused before the build
    assert tree_digest(dest) == tree_digest(old_bundle)
    assert tree_digest(outside) == before_outside
    box.nothing_outside("outside")


# ---------------------------------------------------------------------------------------
# A20: `edgepack pack --out` replaces only an archive edgepack wrote


def _user_tar_gz(path: Path) -> None:
    """A real .tar.gz the user made: not an edgepack archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"chapter 1"
        info = tarfile.TarInfo("thesis/chapter1.tex")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buf.getvalue()))


@pytest.mark.parametrize("what", ["user-file", "user-tar-gz", "sha256-user-file", "archive-link", "sha256-link"])
def test_pack_never_replaces_a_users_file(box, old_bundle, what):
    bundle = _place(old_bundle, box.root / "bundles")
    box.out.mkdir()
    archive = box.out / "thesis.tar.gz"
    sha = box.out / "thesis.tar.gz.sha256"
    outside = box.root / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    named = archive
    if what == "user-file":
        archive.write_text("\\documentclass{book}\n")
    elif what == "user-tar-gz":
        _user_tar_gz(archive)
    elif what == "sha256-user-file":
        sha.write_text("my notes\n")
        named = sha
    elif what == "archive-link":
        archive.symlink_to(outside / "keep.txt")
    else:
        sha.symlink_to(outside / "keep.txt")
        named = sha
    before, before_outside = tree_digest(box.out), tree_digest(outside)
    one_error(box.cli("pack", bundle, "--out", archive), str(named))
    assert tree_digest(box.out) == before and tree_digest(outside) == before_outside
    assert tree_digest(bundle) == tree_digest(old_bundle)
    box.nothing_outside("outside", "bundles")


def test_pack_replaces_its_own_archive(box, old_bundle):
    """An archive and checksum file edgepack wrote are replaced (packing again works)."""
    bundle = _place(old_bundle, box.root / "bundles")
    archive = box.out / "rel.tar.gz"
    first = box.cli("pack", bundle, "--out", archive)
    assert first.returncode == 0, explain(first)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (box.out / "rel.tar.gz.sha256").read_text() == f"{digest}  rel.tar.gz\n"
    again = box.cli("pack", bundle, "--out", archive)
    assert again.returncode == 0, explain(again)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == digest  # reproducible
    assert sorted(p.name for p in box.out.iterdir()) == ["rel.tar.gz", "rel.tar.gz.sha256"]
    box.nothing_outside("bundles")


def test_pack_refuses_a_sha256_for_another_file(tmp_path, old_bundle):
    """Unit: a checksum line for another file name is not the one pack writes here."""
    from edgepack.archive import check_pack_destination
    from edgepack.errors import BundleError

    (tmp_path / "a.tar.gz.sha256").write_text(f"{'0' * 64}  b.tar.gz\n")
    with pytest.raises(BundleError, match="a.tar.gz.sha256"):
        check_pack_destination(tmp_path / "a.tar.gz")
    (tmp_path / "a.tar.gz.sha256").write_text(f"{'0' * 64}  a.tar.gz\n")
    check_pack_destination(tmp_path / "a.tar.gz")
