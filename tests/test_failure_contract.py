"""The failure contract and verification that cannot be talked round, on hostile input.

Exit 0 passed, 1 a gate or check failed (or a signature / device result is refused), 2 bad
input with one line naming the problem; never a traceback unless `--debug`; nothing written
outside `--out`. One signed bundle is built for the module; tests that tamper copy it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import PY, REPO, base_env, cli, device, explain, load_manifest, run, write_toml

RUNS = ("--runs", "2")
TARGET = "rpi4"  # its float and int8 ONNX Runtime artifacts are both .ort files on any host


def refused(proc, code: int, *needles: str) -> str:
    """The one stderr line of a refusal with exit `code`, naming each of `needles`; no traceback."""
    assert proc.returncode == code, explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, explain(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr:\n{explain(proc)}"
    for n in needles:
        assert n in lines[0], f"{n!r} not named in: {lines[0]}"
    return lines[0]


def tree(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def outside(work) -> list[str]:
    """What is in `work` outside its `out` folder (Python's own bytecode cache of a user's
    module aside)."""
    return [p for p in tree(work) if p != "out" and not p.startswith(("out/", "__pycache__"))]


def build_refused(work, code: int, needles, *args):
    """`edgepack build ARGS --out work/out` run in `work`: refused with one line, and nothing
    written: `out` empty, no other new file in `work`."""
    out = work / "out"
    before = outside(work)
    proc = cli("build", *args, "--out", out, "--latency-runs", "2", cwd=work)
    line = refused(proc, code, *needles)
    # no bundle, finished or partial (a build's lock file may stay: edgepack.stages.bundle)
    assert [p for p in tree(out) if not p.endswith(".lock")] == [], f"left in {out}: {tree(out)}"
    assert outside(work) == before
    return line


def flip(path, fraction=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * fraction)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    for name in ("release", "other"):
        proc = cli("keygen", d / name)
        assert proc.returncode == 0, explain(proc)
    assert (d / "release").stat().st_mode & 0o077 == 0  # the private key is the owner's only
    return d


@pytest.fixture(scope="module")
def signed(tmp_path_factory, tiny_model, tiny_calib, tiny_eval, keys):
    out = tmp_path_factory.mktemp("signed_dist")
    proc = cli("build", "--onnx", tiny_model, "--calib", tiny_calib, "--eval", tiny_eval, "--targets", TARGET,
               "--out", out, "--latency-runs", "2", "--search-trials", "0", "--sign", keys / "release")
    assert proc.returncode == 0, explain(proc)
    return out / "tiny-0.1.0"


@pytest.fixture(scope="module")
def device_result(signed, tmp_path_factory) -> dict:
    """A genuine device runner result of the signed bundle."""
    path = tmp_path_factory.mktemp("result") / "result.json"
    proc = device("verify", signed, *RUNS, "--json", path)
    assert proc.returncode == 0, explain(proc)
    return json.loads(path.read_text())


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    return d


# ---------------------------------------------------------------------------------------
# User code that exits or is interrupted: reported, not obeyed


def test_factory_calling_sys_exit_is_reported(work, tiny_calib):
    (work / "model.py").write_text("import sys\n\ndef factory():\n    sys.exit(0)\n")
    build_refused(work, 2, ["model.py:factory", "sys.exit(0)"], "--torch", "model.py:factory",
                  "--input-shape", "1,3,8,8", "--calib", tiny_calib, "--targets", TARGET)


def test_factory_raising_keyboard_interrupt_is_reported(work, tiny_calib):
    (work / "model.py").write_text("def factory():\n    raise KeyboardInterrupt\n")
    build_refused(work, 2, ["model.py:factory", "KeyboardInterrupt"], "--torch", "model.py:factory",
                  "--input-shape", "1,3,8,8", "--calib", tiny_calib, "--targets", TARGET)


def test_calibration_entry_point_raising_system_exit_is_reported(work, tiny_model):
    (work / "calib.py").write_text("def batches():\n    raise SystemExit(3)\n    yield\n")
    build_refused(work, 2, ["calib.py:batches", "SystemExit", "sys.exit(3)"], "--onnx", tiny_model,
                  "--calib", "calib.py:batches", "--targets", TARGET)


def test_custom_metric_calling_sys_exit_is_reported(work, tiny_model, tiny_calib):
    (work / "metrics.py").write_text("import sys\n\ndef score(reference, test, labels):\n    sys.exit(0)\n")
    cfg = write_toml(work / "edgepack.toml", f"""
        name = "tiny"
        out = "out"
        targets = ["{TARGET}"]
        [model]
        onnx = "{tiny_model}"
        [data]
        calibration = "{tiny_calib}"
        [task]
        metric = "metrics.py:score"
        """)
    before = outside(work)
    proc = cli("build", cfg, cwd=work)
    refused(proc, 2, "metrics.py:score", "sys.exit(0)")
    assert [p for p in tree(work / "out") if not p.endswith(".lock")] == []
    assert outside(work) == before


# ---------------------------------------------------------------------------------------
# Bad input: one line, exit 2


def test_binary_config_file(work):
    (work / "edgepack.toml").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    proc = cli("build", work / "edgepack.toml", cwd=work)
    refused(proc, 2, "edgepack.toml", "not a text file")


def test_nan_weights_are_named(work, tiny_model, tiny_calib):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(tiny_model))
    for init in m.graph.initializer:
        if init.name == "conv_w":
            w = numpy_helper.to_array(init).copy()
            w[0, 0, 0, 0] = np.nan
            init.CopyFrom(numpy_helper.from_array(w, "conv_w"))
    onnx.save(m, str(work / "nan.onnx"))
    build_refused(work, 2, ["nan.onnx", "'conv_w'", "NaN"], "--onnx", "nan.onnx", "--calib", tiny_calib,
                  "--targets", TARGET)


def test_input_shape_with_a_bad_dimension_names_it(work, tiny_model, tiny_calib):
    line = build_refused(work, 2, ["--input-shape", "'1,x,3'", "dimension 2", "'x'"], "--onnx", tiny_model,
                         "--input-shape", "1,x,3", "--calib", tiny_calib, "--targets", TARGET)
    assert "[1, 3]" not in line


def test_labels_outside_the_class_range(work, tiny_model, tiny_calib, tiny_eval):
    np.savez(work / "eval.npz", x=np.load(tiny_eval), y=np.arange(24) + 100)
    build_refused(work, 2, ["eval.npz", "labels", "10 scores", "0..9"], "--onnx", tiny_model, "--calib", tiny_calib,
                  "--eval", "eval.npz", "--targets", TARGET)


def test_bad_signing_key_is_refused_before_building(work, tiny_model, tiny_calib):
    (work / "key.pem").write_text("not a key\n")
    build_refused(work, 2, ["key.pem", "signing key"], "--onnx", tiny_model, "--calib", tiny_calib,
                  "--targets", TARGET, "--sign", "key.pem")


def test_keygen_does_not_overwrite(keys):
    before = (keys / "release").read_bytes()
    refused(cli("keygen", keys / "release"), 2, "release", "already exists")
    assert (keys / "release").read_bytes() == before


def test_corrupt_pt2_is_one_line_without_torch_logs(work, tiny_calib):
    (work / "bad.pt2").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    build_refused(work, 2, ["bad.pt2"], "--pt2", "bad.pt2", "--input-shape", "1,3,8,8", "--calib", tiny_calib,
                  "--targets", TARGET)


def test_verify_json_onto_a_folder(signed, work):
    (work / "result").mkdir()
    refused(cli("verify", signed, *RUNS, "--json", work / "result"), 2, str(work / "result"))
    assert tree(work / "result") == []


@pytest.mark.parametrize("mutation", ["missing golden", "targets as a list", "an artifact as a list"])
@pytest.mark.parametrize("command", ["verify", "device", "merge"])
def test_malformed_manifest(signed, bundle_copy, device_result, work, mutation, command):
    b = bundle_copy(signed)
    m = load_manifest(b)
    if mutation == "missing golden":
        del m["golden"]
    elif mutation == "targets as a list":
        m["targets"] = [m["targets"][TARGET]]
    else:
        m["targets"][TARGET]["artifacts"][0] = [1, 2]
    (b / "manifest.json").write_text(json.dumps(m))
    if command in ("verify", "device"):
        # a manifest that no longer lists files the bundle holds is a tampered bundle: exit 1,
        # a FAIL line naming each such file (edgepack.safepath); otherwise malformed: exit 2
        proc = cli("verify", b, *RUNS) if command == "verify" else device("verify", b, *RUNS)
        assert "Traceback" not in proc.stdout + proc.stderr, explain(proc)
        if proc.returncode == 1:
            text = proc.stdout + proc.stderr
            assert "verification FAILED" in proc.stdout and "not listed in the manifest" in text, explain(proc)
        else:
            refused(proc, 2, "manifest.json")
        return
    (work / "r.json").write_text(json.dumps(device_result))
    field = "golden" if mutation == "missing golden" else "targets"
    refused(cli("merge", b, work / "r.json"), 2, "manifest.json", field)


@pytest.mark.parametrize("mutation", ["missing targets", "target as a list", "top level a list"])
def test_malformed_device_result(signed, bundle_copy, device_result, work, mutation):
    b = bundle_copy(signed)
    before = (b / "manifest.json").read_bytes()
    r = json.loads(json.dumps(device_result))
    if mutation == "missing targets":
        del r["targets"]
    elif mutation == "target as a list":
        r["targets"][TARGET] = [r["targets"][TARGET]]
    else:
        r = [r]
    (work / "r.json").write_text(json.dumps(r))
    refused(cli("merge", b, work / "r.json"), 2, "r.json")
    assert (b / "manifest.json").read_bytes() == before


# ---------------------------------------------------------------------------------------
# Forged device results: merge refuses them (exit 1, naming the result file)


def _forged(result: dict, *, checksum: str | None = "0" * 64) -> dict:
    """A real result turned into "device-exact, 100 %" for the int8 artifact."""
    r = json.loads(json.dumps(result))
    (a,) = [a for a in r["targets"][TARGET]["artifacts"] if a["kind"] == "ort-int8"]
    exact = dict(a["numerics"][a["gate_numerics"]], top1=100.0, sqnr_db=99.0)
    a.update(numerics={**a["numerics"], "device-exact": exact}, gate_numerics="device-exact", metrics=exact,
             passed=True)
    if checksum is not None:
        r["checksums"][a["path"]] = checksum
    return r


@pytest.mark.parametrize("forgery", ["wrong checksum", "no checksums", "no runner program", "no runtime"])
def test_forged_device_result_is_refused(signed, bundle_copy, device_result, work, forgery):
    b = bundle_copy(signed)
    before = (b / "manifest.json").read_bytes()
    r = _forged(device_result, checksum="0" * 64 if forgery == "wrong checksum" else None)
    if forgery == "no checksums":
        del r["checksums"]
    elif forgery == "no runner program":
        del r["runner"]["program"]
    elif forgery == "no runtime":
        for a in r["targets"][TARGET]["artifacts"]:
            a.pop("runtime", None)
    (work / "forged.json").write_text(json.dumps(r))
    line = refused(cli("merge", b, work / "forged.json"), 1, "forged.json", "refused")
    if forgery == "wrong checksum":
        assert "model.int8.ort" in line
    assert (b / "manifest.json").read_bytes() == before


def test_genuine_device_result_merges_labelled_unsigned(signed, bundle_copy, device_result, work, keys):
    b = bundle_copy(signed)
    (work / "r.json").write_text(json.dumps(device_result))
    proc = cli("merge", b, work / "r.json")
    assert proc.returncode == 0, explain(proc)
    assert "unsigned device result" in proc.stdout and "unsigned device result" in (b / "report.md").read_text()
    assert load_manifest(b)["device_results"][-1]["signed"] is False
    # the manifest changed: the old signature is gone (the bundle now reads as unsigned), SHA256SUMS is redone
    assert not (b / "manifest.sig").exists() and "signature no longer applies" in proc.stdout
    refused(cli("verify", b, *RUNS, "--key", keys / "release.pub"), 1, "manifest.sig", "not signed")


# ---------------------------------------------------------------------------------------
# verify measures what it gates; SHA256SUMS; signatures


def test_swapped_int8_and_float_artifact_fails_the_measured_size_gate(signed, bundle_copy):
    b = bundle_copy(signed)
    _swap_float_into_int8(b, fix_ratio=True)  # a careful forger: every recorded number "fixed"
    proc = cli("verify", b, *RUNS)
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if f"{TARGET}/ort-int8" in ln]
    assert line.startswith("FAIL") and "max_int8_size_ratio" in line, proc.stderr
    assert "verification FAILED" in proc.stdout


def _swap_float_into_int8(b, *, fix_ratio: bool) -> dict:
    """The float artifact copied over the int8 one, whose sha256 and size (and, with
    `fix_ratio`, its recorded file-size ratio) are "fixed" in the manifest, SHA256SUMS
    rewritten; returns the int8 entry as it was before."""
    m = load_manifest(b)
    arts = {a["kind"]: a for a in m["targets"][TARGET]["artifacts"]}
    int8, flt = arts["ort-int8"], arts["ort-float"]
    before = dict(int8)
    shutil.copyfile(b / flt["path"], b / int8["path"])
    data = (b / int8["path"]).read_bytes()
    int8.update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    if fix_ratio:
        int8["size_ratio"] = 1.0
    (b / "manifest.json").write_text(json.dumps(m, indent=2))
    _resum(b)
    return before


def _resum(b) -> None:
    """What a forger who read the format does after editing a bundle: drop the signatures and
    write SHA256SUMS again for the files as they now are."""
    from edgepack.signing import write_sums

    for sig in ("manifest.sig", "SHA256SUMS.sig"):
        (b / sig).unlink(missing_ok=True)
    write_sums(b)


def test_sha256sums_checks_with_coreutils(signed, bundle_copy):
    assert shutil.which("sha256sum"), "coreutils' sha256sum (a Debian base package) is what a device checks with"
    b = bundle_copy(signed)
    ok = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=b, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    listed = [ln.split("  ", 1)[1] for ln in (b / "SHA256SUMS").read_text().splitlines()]
    files = [p for p in tree(b) if (b / p).is_file() and p not in ("SHA256SUMS", "manifest.sig", "SHA256SUMS.sig")]
    assert listed == sorted(files) and "manifest.json" in listed
    flip(b / f"{TARGET}/model.int8.ort")
    bad = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=b, capture_output=True, text=True)
    assert bad.returncode == 1 and f"{TARGET}/model.int8.ort: FAILED" in bad.stdout


def test_signed_bundle_verifies_with_its_key(signed, keys):
    proc = cli("verify", signed, *RUNS, "--key", keys / "release.pub")
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.strip().splitlines()[-1] == "verified"


@pytest.mark.parametrize("tamper", ["another key", "manifest.json byte", "artifact byte", "unsigned",
                                    "extra file"])
def test_signature_refuses(signed, bundle_copy, keys, tamper):
    b = bundle_copy(signed)
    key, needle = keys / "release.pub", "manifest.json"
    if tamper == "another key":
        key = keys / "other.pub"
    elif tamper == "manifest.json byte":
        text = (b / "manifest.json").read_text()
        (b / "manifest.json").write_text(text.replace('"status": "passed"', '"status": "passed" '))
    elif tamper == "artifact byte":
        flip(b / f"{TARGET}/model.int8.ort")
        needle = f"{TARGET}/model.int8.ort"
    elif tamper == "unsigned":
        (b / "manifest.sig").unlink()
        needle = "manifest.sig"
    else:
        (b / f"{TARGET}/run.sh").write_text("#!/bin/sh\n")
        needle = "run.sh"
    refused(cli("verify", b, *RUNS, "--key", key), 1, needle)


# ---------------------------------------------------------------------------------------
# The top-level handler: an unexpected error is one line unless --debug; Ctrl-C is 130


def _patched(argv: list[str], raise_: str) -> subprocess.CompletedProcess:
    code = ("import sys, edgepack.api as api\n"
            f"def boom(*a, **k):\n    raise {raise_}\n"
            "api.inspect = boom\n"
            "from edgepack.cli import main\n"
            f"sys.argv = ['edgepack', *{argv!r}]\n"
            "main()\n")
    return run([PY, "-c", code], env=base_env(PYTHONPATH=str(REPO)))


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(tiny_model):
    line = refused(_patched(["inspect", str(tiny_model)], "RuntimeError('boom')"), 2, "RuntimeError", "boom",
                   "--debug")
    assert line.startswith("error:")
    debug = _patched(["--debug", "inspect", str(tiny_model)], "RuntimeError('boom')")
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "boom" in debug.stderr, explain(debug)
    after = _patched(["inspect", str(tiny_model), "--debug"], "RuntimeError('boom')")  # anywhere on the line
    assert after.returncode == 2 and "Traceback" in after.stderr, explain(after)


def test_ctrl_c_outside_user_code_is_130(tiny_model):
    refused(_patched(["inspect", str(tiny_model)], "KeyboardInterrupt"), 130, "interrupted")


def test_device_runner_unexpected_error_is_one_line(signed):
    code = ("import sys\nimport edgepack.verification.device as d\n"
            "def boom(*a, **k):\n    raise RuntimeError('boom')\n"
            "d.verify_bundle = boom\n"
            f"sys.exit(d.main(['verify', {str(signed)!r}] + sys.argv[1:]))\n")
    refused(run([PY, "-c", code], env=base_env(PYTHONPATH=str(REPO))), 2, "RuntimeError", "boom", "--debug")
    debug = run([PY, "-c", code, "--debug"], env=base_env(PYTHONPATH=str(REPO)))
    assert debug.returncode == 2 and "Traceback" in debug.stderr, explain(debug)


def test_merge_measures_sizes_from_the_files(signed, bundle_copy, work):
    """The int8 artifact swapped for the float one, the manifest's checksum "fixed", and a
    real device run of that bundle (its checksums match): merge judges the size gates on
    ratios it measures from the files, so the merged int8 artifact fails its size gate
    instead of passing on the manifest's recorded ratio."""
    b = bundle_copy(signed)
    claimed = _swap_float_into_int8(b, fix_ratio=True)["int8_size_ratio"]
    run = device("verify", b, *RUNS, "--json", work / "swapped.json")
    assert run.returncode == 0, explain(run)  # the runner reads the manifest's ratios: it cannot tell
    proc = cli("merge", b, work / "swapped.json")
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    merged = {a["kind"]: a for a in load_manifest(b)["targets"][TARGET]["artifacts"]}["ort-int8"]
    (gate,) = [v for v in merged["metrics"]["gates"] if v["gate"] == "max_int8_size_ratio"]
    assert gate["passed"] is False and gate["value"] > 2 * claimed, (gate, claimed)


@pytest.mark.parametrize("tamper", ["extra file", "artifact bytes changed"])
def test_merge_into_a_tampered_bundle_is_refused(signed, bundle_copy, device_result, work, tamper):
    """merge folds a verdict into the bundle's manifest: a bundle whose files do not match it
    (an unlisted file, an artifact whose bytes changed) is refused, naming the file, and its
    manifest is left as it was."""
    b = bundle_copy(signed)
    before = (b / "manifest.json").read_bytes()
    if tamper == "extra file":
        (b / TARGET / "run_me.sh").write_text("#!/bin/sh\necho hi\n")
        name = f"{TARGET}/run_me.sh"
    else:
        flip(b / f"{TARGET}/model.int8.ort")
        name = f"{TARGET}/model.int8.ort"
    (work / "r.json").write_text(json.dumps(device_result))
    refused(cli("merge", b, work / "r.json"), 1, name, "refused")
    assert (b / "manifest.json").read_bytes() == before


# ---------------------------------------------------------------------------------------
# Found by a red-team corpus: SHA256SUMS read by verify, signing through a link, names on
# read, a device runner fooled by a swap, merge refusals naming the result


@pytest.mark.parametrize("case", ["a changed line", "deleted", "a line outside the bundle"])
@pytest.mark.parametrize("runner", ["verify", "device"])
def test_sha256sums_is_checked_without_a_key(signed, bundle_copy, case, runner):
    """What `sha256sum -c SHA256SUMS` on a device would check, verify checks too, with or
    without --key: a changed line, a missing file, a line naming ../../etc/passwd (never read)."""
    b = bundle_copy(signed)
    sums = b / "SHA256SUMS"
    if case == "a changed line":
        lines = sums.read_text().splitlines()
        lines[0] = "0" * 64 + lines[0][64:]
        sums.write_text("\n".join(lines) + "\n")
    elif case == "deleted":
        sums.unlink()
    else:
        sums.write_text(sums.read_text() + "0" * 64 + "  ../../../../etc/passwd\n")
    for sig in ("manifest.sig", "SHA256SUMS.sig"):
        (b / sig).unlink(missing_ok=True)
    proc = cli("verify", b, *RUNS) if runner == "verify" else device("verify", b, *RUNS)
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert any(ln.startswith("FAIL") and "SHA256SUMS" in ln for ln in (proc.stdout + proc.stderr).splitlines()), \
        explain(proc)


def test_sign_never_writes_through_a_link(signed, bundle_copy, keys, tmp_path):
    b = bundle_copy(signed)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file\n")
    (b / "SHA256SUMS").unlink()
    (b / "SHA256SUMS").symlink_to(victim)
    line = refused(cli("sign", b, keys / "release"), 1, "SHA256SUMS", "refused to sign")
    assert "plain file" in line or "symbolic link" in line
    assert victim.read_text() == "the user's file\n"


def test_sign_refuses_a_tampered_bundle(signed, bundle_copy, keys):
    b = bundle_copy(signed)
    (b / TARGET / "extra.sh").write_text("#!/bin/sh\n")
    refused(cli("sign", b, keys / "release"), 1, "extra.sh", "refused to sign")
    assert not (b / "SHA256SUMS").read_text().count("extra.sh")


def test_device_runner_sees_a_swap_the_manifest_hides(signed, bundle_copy):
    """The float model copied over the int8 one, its sha256 and size "fixed" in the manifest
    and SHA256SUMS rewritten: the device runner (which cannot parse every format's weights)
    measures the file-size ratio and finds the manifest's recorded one is not the files'."""
    b = bundle_copy(signed)
    int8 = _swap_float_into_int8(b, fix_ratio=False)
    proc = device("verify", b, *RUNS)
    assert proc.returncode == 1, explain(proc)
    hits = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("FAIL") and "size_ratio" in ln]
    assert hits and int8["path"] in hits[0], explain(proc)


@pytest.mark.parametrize("field", ["name", "target"])
def test_names_that_become_paths_are_checked_on_read(signed, bundle_copy, field):
    b = bundle_copy(signed)
    m = load_manifest(b)
    if field == "name":
        m["name"] = "../../../../tmp/pwned"
    else:
        m["targets"]["../../pwned"] = m["targets"].pop(TARGET)
    (b / "manifest.json").write_text(json.dumps(m, indent=2))
    for command in (lambda: cli("verify", b, *RUNS), lambda: device("verify", b, *RUNS)):
        refused(command(), 2, "manifest.json", "safe file name")


@pytest.mark.parametrize("mutation", ["another bundle", "an unknown target", "an unknown artifact"])
def test_merge_refusals_name_the_result(signed, bundle_copy, device_result, work, mutation):
    b = bundle_copy(signed)
    before = (b / "manifest.json").read_bytes()
    r = json.loads(json.dumps(device_result))
    if mutation == "another bundle":
        r["bundle"] = "other-9.9.9"
    elif mutation == "an unknown target":
        r["targets"]["pi-zero"] = r["targets"].pop(TARGET)
    else:
        r["targets"][TARGET]["artifacts"][0]["kind"] = "tflite-int4"
    (work / "res.json").write_text(json.dumps(r))
    refused(cli("merge", b, work / "res.json"), 1, "res.json", "refused")
    assert (b / "manifest.json").read_bytes() == before


def test_a_device_result_with_a_string_for_a_verdict_is_refused(signed, bundle_copy, device_result, work):
    b = bundle_copy(signed)
    r = json.loads(json.dumps(device_result))
    r["passed"] = "yes"
    (work / "res.json").write_text(json.dumps(r))
    refused(cli("merge", b, work / "res.json"), 2, "res.json", "passed")


def test_verify_leaves_nothing_in_tmpdir(signed, tmp_path):
    """verify (a folder or a release archive) writes nowhere but its own temporary folder,
    which it removes: onnxruntime's telemetry file `.ses` used to stay in $TMPDIR."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    archive = tmp_path / "b.tar.gz"
    packed = cli("pack", signed, "--out", archive)
    assert packed.returncode == 0, explain(packed)
    for what in (signed, archive):
        proc = cli("verify", what, *RUNS, env=base_env(TMPDIR=str(tmp)))
        assert proc.returncode == 0, explain(proc)
        assert sorted(p.name for p in tmp.iterdir()) == [], what


def test_a_device_result_with_a_negative_latency_is_refused(signed, bundle_copy, device_result, work):
    b = bundle_copy(signed)
    before = (b / "manifest.json").read_bytes()
    r = json.loads(json.dumps(device_result))
    a = next(a for a in r["targets"][TARGET]["artifacts"] if a.get("latency"))
    a["latency"]["p50_ms"] = -5.0
    (work / "res.json").write_text(json.dumps(r))
    refused(cli("merge", b, work / "res.json"), 2, "res.json", "p50_ms")
    assert (b / "manifest.json").read_bytes() == before
