"""Hostile input for the trust boundary: .pt2 archives that would run code, names that would
become paths outside `--out`, bundles that hold more (or other) than their manifest says, and
release archives that would write outside their extraction folder.

Each case asserts the exit code, one message line naming the file or field, no traceback,
and that nothing appeared outside the output folder.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, cli, device, explain, load_manifest, same_isa_target, write_toml

RUNS = ("--runs", "2")


# ---------------------------------------------------------------------------------------
# Helpers


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def no_traceback(proc) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, explain(proc)


def one_error(proc, *needles: str) -> str:
    """Exit 2 with exactly one `error:` line on stderr that names every needle."""
    assert proc.returncode == 2, explain(proc)
    no_traceback(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), explain(proc)
    for n in needles:
        assert n in lines[0], explain(proc)
    return lines[0]


def verify_fails(proc, *needles: str) -> str:
    """Exit 1, and one FAIL line naming every needle."""
    assert proc.returncode == 1, explain(proc)
    no_traceback(proc)
    text = proc.stdout + proc.stderr
    hits = [ln for ln in text.splitlines() if ln.startswith("FAIL") and all(n in ln for n in needles)]
    assert hits, explain(proc)
    return hits[0]


class Payload:
    """A pickle that creates a folder when unpickled: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ---------------------------------------------------------------------------------------
# One bundle (built with --archive) for the whole module


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model, tiny_calib, tiny_eval):
    out = tmp_path_factory.mktemp("hostile_dist")
    proc = cli("build", "--onnx", tiny_model, "--calib", tiny_calib, "--eval", tiny_eval, "--targets",
               same_isa_target(), "--out", out, "--latency-runs", "3", "--search-trials", "0", "--archive")
    assert proc.returncode == 0, explain(proc)
    return out / "tiny-0.1.0"


@pytest.fixture
def copy(built, tmp_path):
    def make() -> Path:
        dst = tmp_path / "work" / built.name
        shutil.copytree(built, dst)
        return dst
    return make


# ---------------------------------------------------------------------------------------
# .pt2 archives


@pytest.fixture(scope="module")
def plain_pt2(tmp_path_factory) -> Path:
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(self.conv(x).relu().mean((2, 3)))

    path = tmp_path_factory.mktemp("pt2") / "plain.pt2"
    torch.export.save(torch.export.export(Tiny().eval(), (torch.randn(1, 3, 8, 8),)), str(path))
    return path


def rewrite_pt2(src: Path, dst: Path, change) -> Path:
    """A copy of a .pt2 archive whose members `change(name, bytes)` rewrites."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            _, _, rel = info.filename.partition("/")
            zout.writestr(f"{dst.stem}/{rel}", change(rel, zin.read(info)))
    return dst


def pickled_weight(marker: Path):
    def change(rel, data):
        if rel.endswith("model_weights_config.json"):
            doc = json.loads(data)
            doc["config"]["conv.weight"]["use_pickle"] = True
            return json.dumps(doc).encode()
        return pickle.dumps(Payload(marker), protocol=2) if rel == "data/weights/weight_0" else data
    return change


def pickled_sample_inputs(marker: Path):
    return lambda rel, data: pickle.dumps(Payload(marker), protocol=2) if rel.startswith("data/sample_inputs/") \
        else data


def python_call_in_graph(rel, data):
    if rel.startswith("models/"):
        return data.replace(b'"torch.ops.aten.relu.default"', b'"torch.serialization.os.system"')
    return data


def test_hostile_pt2_is_refused_without_running_it(plain_pt2, tiny_calib, tmp_path):
    marker = tmp_path / "PWNED"
    evil = rewrite_pt2(plain_pt2, tmp_path / "evil.pt2", pickled_weight(marker))
    member = "data/weights/weight_0"
    out = tmp_path / "dist"
    before = tree(tmp_path)
    proc = cli("build", "--pt2", evil, "--input-shape", "1,3,8,8", "--calib", tiny_calib, "--out", out,
               "--targets", same_isa_target())
    line = one_error(proc, "evil.pt2", member, "--trust-source")
    assert not marker.exists(), line
    assert {p for p in tree(tmp_path) if not p.startswith("dist")} == before
    assert not list(out.rglob("manifest.json"))


@pytest.mark.parametrize("case, member", [
    ("sample", "data/sample_inputs/model.pt"),
    ("graph", "models/model.json"),
    ("legacy", "archive_version"),
])
def test_other_hostile_pt2_parts_are_refused(plain_pt2, tmp_path, case, member):
    """The same refusal in-process (each CLI build imports torch: ~10 s)."""
    from edgepack.config import ModelSection
    from edgepack.stages.load import Untrusted, load_model

    marker = tmp_path / "PWNED"
    change = {"sample": pickled_sample_inputs(marker), "graph": python_call_in_graph,
              "legacy": lambda rel, data: data}[case]
    evil = rewrite_pt2(plain_pt2, tmp_path / "evil.pt2", change)
    if case == "legacy":  # the older format (a pickle-based zip) has no archive_version
        with zipfile.ZipFile(evil) as z:
            members = {i.filename: z.read(i) for i in z.infolist() if not i.filename.endswith("archive_version")}
        with zipfile.ZipFile(evil, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
    with pytest.raises(Untrusted) as info:
        load_model(ModelSection(pt2=evil, input_shape=(1, 3, 8, 8)))
    text = str(info.value)
    assert "\n" not in text and "evil.pt2" in text and member in text and "--trust-source" in text
    assert not marker.exists()


def test_plain_pt2_loads_without_trust_and_hostile_one_runs_only_when_trusted(plain_pt2, tmp_path):
    from edgepack.config import ModelSection
    from edgepack.errors import ModelError
    from edgepack.stages.load import load_model

    program = load_model(ModelSection(pt2=plain_pt2, input_shape=(1, 3, 8, 8)))
    assert program.kind == "torch" and program.module is not None
    marker = tmp_path / "PWNED"
    evil = rewrite_pt2(plain_pt2, tmp_path / "evil.pt2", pickled_sample_inputs(marker))
    with pytest.raises(ModelError):  # a trusted file runs its pickles: by design (README, --help)
        load_model(ModelSection(pt2=evil, input_shape=(1, 3, 8, 8), trust_source=True))
    assert marker.exists()


def test_trust_source_in_config_and_help(tmp_path, plain_pt2, tiny_calib):
    from edgepack.config import load_config

    shutil.copyfile(plain_pt2, tmp_path / "m.pt2")
    shutil.copyfile(tiny_calib, tmp_path / "c.npy")
    cfg = write_toml(tmp_path / "edgepack.toml", f"""
        name = "m"
        targets = ["{same_isa_target()}"]
        [model]
        pt2 = "m.pt2"
        input_shape = [1, 3, 8, 8]
        trust_source = true
        [data]
        calibration = "c.npy"
    """)
    assert load_config(cfg).model.trust_source is True
    proc = cli("build", "--help", env={**os.environ, "COLUMNS": "250"})
    assert "--trust-source" in proc.stdout and "unpickling runs code" in proc.stdout, proc.stdout
    assert "runs that file's code" in proc.stdout


# ---------------------------------------------------------------------------------------
# Names that become paths


@pytest.mark.parametrize("name", ["../../../escaped", "a/b", "..", "x\\y", "c:evil"])
def test_profile_name_must_be_one_path_component(tiny_model, tiny_calib, tmp_path, name):
    src = (REPO / "targets" / f"{same_isa_target()}.toml").read_text()
    profile = tmp_path / "prof" / "hostile.toml"
    profile.parent.mkdir()
    profile.write_text(f"name = {json.dumps(name)}\n" + "\n".join(
        ln for ln in src.splitlines() if not ln.startswith("name")))
    out = tmp_path / "a" / "b" / "dist"
    before = tree(tmp_path)
    proc = cli("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", profile, "--out", out)
    one_error(proc, "hostile.toml", "name")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("flag, value", [("--name", "../../x"), ("--version", "1.0/../../../x"),
                                         ("--name", "ok\n"), ("--version", "..")])
def test_bundle_name_and_version_must_be_one_path_component(tiny_model, tiny_calib, tmp_path, flag, value):
    out = tmp_path / "a" / "dist"
    before = tree(tmp_path)
    proc = cli("build", "--onnx", tiny_model, "--calib", tiny_calib, "--out", out, flag, value)
    one_error(proc, flag)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "a\\b", "C:/x", "C:x", "a//b", "a/", "./a",
                                  "a/\x00b", ""])
def test_manifest_paths_are_relative_and_inside(path):
    from pydantic import ValidationError

    from edgepack.manifest.models import FileRef
    from edgepack.safepath import relative_path_problem

    assert relative_path_problem(path)
    with pytest.raises(ValidationError):
        FileRef(path=path, sha256="0" * 64, size_bytes=0)
    assert FileRef(path="rpi4/model.int8.ort", sha256="0" * 64, size_bytes=0).path == "rpi4/model.int8.ort"


# ---------------------------------------------------------------------------------------
# Verification refuses what the manifest does not account for


def _artifact_path(bundle: Path) -> str:
    m = load_manifest(bundle)
    return next(a["path"] for t in m["targets"].values() for a in t["artifacts"])


def test_untouched_bundle_and_its_archive_verify(built):
    proc = cli("verify", built, *RUNS)
    assert proc.returncode == 0, explain(proc)
    archive = built.parent / "tiny-0.1.0.tar.gz"
    assert archive.is_file()
    digest = (built.parent / "tiny-0.1.0.tar.gz.sha256").read_text().split()
    import hashlib

    assert digest == [hashlib.sha256(archive.read_bytes()).hexdigest(), archive.name]
    proc = cli("verify", archive, *RUNS)
    assert proc.returncode == 0, explain(proc)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert {m.mode for m in members} <= {0o644, 0o755} and len({m.mtime for m in members}) == 1


def test_pack_is_reproducible(built, tmp_path):
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    for dst in (a, b):
        proc = cli("pack", built, "--out", dst, env=env)
        assert proc.returncode == 0, explain(proc)
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}


def test_extra_executable_file_fails_verify(copy):
    b = copy()
    script = b / _artifact_path(b).split("/")[0] / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    verify_fails(cli("verify", b, *RUNS), "run.sh", "not listed in the manifest")
    verify_fails(device("verify", b, *RUNS), "run.sh", "not listed in the manifest")


def test_symlinked_artifact_fails_verify(copy, tmp_path):
    b = copy()
    rel = _artifact_path(b)
    outside = tmp_path / "outside.bin"
    shutil.copyfile(b / rel, outside)
    (b / rel).unlink()
    (b / rel).symlink_to(outside)
    verify_fails(cli("verify", b, *RUNS), rel, "symbolic link")


def test_symlinked_folder_fails_verify(copy, tmp_path):
    b = copy()
    folder = _artifact_path(b).split("/")[0]
    shutil.move(b / folder, tmp_path / "elsewhere")
    (b / folder).symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    verify_fails(cli("verify", b, *RUNS), folder, "symbolic link")


@pytest.mark.parametrize("forged", ["/etc/passwd", "../outside.bin"])
def test_manifest_entry_outside_the_bundle_fails_verify(copy, forged):
    b = copy()
    m = load_manifest(b)
    m["golden"]["inputs"]["path"] = forged
    (b / "manifest.json").write_text(json.dumps(m))
    (b.parent / "outside.bin").write_bytes(b"x")
    verify_fails(cli("verify", b, *RUNS), forged, "not a relative path inside the bundle")
    verify_fails(device("verify", b, *RUNS), forged)


def test_unreadable_manifest_is_exit_2(copy):
    b = copy()
    (b / "manifest.json").write_bytes(bytes(range(256)))
    one_error(cli("verify", b, *RUNS), "manifest.json")
    one_error(device("verify", b, *RUNS), "manifest.json")


def test_pack_refuses_a_bundle_with_an_unlisted_file(copy, tmp_path):
    b = copy()
    (b / "notes.txt").write_text("hello")
    proc = cli("pack", b, "--out", tmp_path / "x.tar.gz")
    one_error(proc, "notes.txt")
    assert not (tmp_path / "x.tar.gz").exists()


# ---------------------------------------------------------------------------------------
# Hostile release archives


def hostile_archive(good: Path, dst: Path, add) -> Path:
    """The good archive's entries plus what `add(tar, top)` writes."""
    with tarfile.open(good) as src, tarfile.open(dst, "w:gz") as tar:
        top = src.getmembers()[0].name
        for m in src.getmembers():
            tar.addfile(m, src.extractfile(m) if m.isfile() else None)
        add(tar, top)
    return dst


def _file(tar, name: str, data: bytes = b"x") -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tar.addfile(ti, io.BytesIO(data))


def _link(tar, name: str, target: str, kind) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, target
    tar.addfile(ti)


def _special(tar, name: str, kind) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    tar.addfile(ti)


@pytest.mark.parametrize("case, add, needle", [
    ("escape", lambda t, top: _file(t, f"{top}/../../escaped.txt"), "escaped.txt"),
    ("absolute", lambda t, top: _file(t, "/tmp/edgepack-hostile-absolute.txt"), "edgepack-hostile-absolute.txt"),
    ("symlink", lambda t, top: _link(t, f"{top}/link", "/etc/passwd", tarfile.SYMTYPE), "link"),
    ("hardlink", lambda t, top: _link(t, f"{top}/hard", "/etc/passwd", tarfile.LNKTYPE), "hard"),
    ("fifo", lambda t, top: _special(t, f"{top}/pipe", tarfile.FIFOTYPE), "pipe"),
    ("device", lambda t, top: _special(t, f"{top}/dev", tarfile.CHRTYPE), "dev"),
    ("unlisted", lambda t, top: _file(t, f"{top}/extra.sh", b"#!/bin/sh\n"), "extra.sh"),
])
def test_hostile_archive_fails_verify(built, tmp_path, case, add, needle):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    archive = hostile_archive(built.parent / "tiny-0.1.0.tar.gz", work / "evil.tar.gz", add)
    before = tree(tmp_path)
    verify_fails(cli("verify", archive, *RUNS), needle)
    assert tree(tmp_path) == before
    assert not Path("/tmp/edgepack-hostile-absolute.txt").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_archive_is_exit_2(built, tmp_path, damage):
    bad = tmp_path / "bad.tar.gz"
    good = (built.parent / "tiny-0.1.0.tar.gz").read_bytes()
    bad.write_bytes(b"not an archive at all" if damage == "garbage" else good[: len(good) // 2])
    one_error(cli("verify", bad), "bad.tar.gz")
    assert tree(tmp_path) == {"bad.tar.gz"}


def test_merge_into_an_archive_is_refused(built):
    one_error(cli("verify", built.parent / "tiny-0.1.0.tar.gz", "--merge", *RUNS), "tiny-0.1.0.tar.gz", "--merge")


def test_decompression_bomb_is_refused_before_it_is_read(built, tmp_path):
    """A member declaring far more bytes than the archive could expand to is refused from its
    header, before anything is decompressed or written (exit 2, naming the archive)."""
    good = built.parent / "tiny-0.1.0.tar.gz"
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(good) as src, gzip.open(bomb, "wb") as gz:
        top = src.getmembers()[0].name
        ti = tarfile.TarInfo(f"{top}/weights.bin")
        ti.size = 20 << 30
        gz.write(ti.tobuf(format=tarfile.GNU_FORMAT))
        gz.write(b"\0" * (1 << 20))  # a little of its data: a real bomb's would follow
    one_error(cli("verify", bomb, *RUNS), "bomb.tar.gz", "decompression bomb")
    assert tree(tmp_path) == {"bomb.tar.gz"}


def test_entry_size_not_the_manifests_fails_verify(built, tmp_path):
    """An archive whose artifact entry holds other bytes than its manifest lists (here one
    byte more) is refused from the entry headers, naming the file, before extraction."""
    good = built.parent / "tiny-0.1.0.tar.gz"
    evil = tmp_path / "evil.tar.gz"
    target = same_isa_target()
    with tarfile.open(good) as src, tarfile.open(evil, "w:gz") as tar:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            if m.isfile() and m.name.endswith(f"{target}/model.int8.ort"):
                data += b"\0"
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
    verify_fails(cli("verify", evil, *RUNS), "model.int8.ort", "manifest lists")


def test_device_runner_verifies_an_archive_and_refuses_a_hostile_one(built, tmp_path):
    """`python -m edgepack.device verify` takes the release archive as it is shipped: the good
    one verifies, one with an entry escaping the extraction folder fails naming it, and
    nothing is written outside the temporary extraction folder."""
    good = built.parent / "tiny-0.1.0.tar.gz"
    proc = device("verify", good, *RUNS)
    assert proc.returncode == 0, explain(proc)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    evil = hostile_archive(good, work / "evil.tar.gz", lambda t, top: _file(t, f"{top}/../../escaped.txt"))
    before = tree(tmp_path)
    proc = device("verify", evil, *RUNS)
    assert proc.returncode == 1, explain(proc)
    no_traceback(proc)
    assert "escaped.txt" in proc.stdout + proc.stderr
    assert tree(tmp_path) == before
