"""The `edgepack` command: a thin shell over the Python API; each verb is one API call.

Exit codes: 0 success / all gates passed, 1 a gate or verification failed (the bundle is
still written and marked failed), 2 bad input or usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import EdgepackError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Turn a trained model into verified, per-device release artifacts.")
out = Console()
err = Console(stderr=True)


class _RichReporter:
    """Draws one spinner per stage and a bar for long loops, on stderr."""

    def __init__(self, progress: Progress):
        self._p = progress
        self._current = None

    def step(self, message: str) -> None:
        if self._current is not None:
            self._p.update(self._current, completed=1, total=1)
        self._current = self._p.add_task(message, total=None)

    def track(self, description: str):
        task = self._p.add_task(f"  {description}", total=None)

        def update(done: int, total: int) -> None:
            self._p.update(task, completed=done, total=total)

        return update

    def close(self) -> None:
        if self._current is not None:
            self._p.update(self._current, completed=1, total=1)


def _fail(exc: EdgepackError) -> None:
    # Plain write: messages contain "[model]"-style names that rich would read as markup,
    # and must stay one line whatever the terminal width.
    sys.stderr.write(f"error: {exc}\n")
    raise typer.Exit(2)


def _parse_shape(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        shape = [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of integers, e.g. 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise typer.BadParameter(f"{text!r}: dimensions must be positive integers")
    return shape


@app.command()
def build(
    config: Optional[Path] = typer.Argument(None, help="edgepack.toml; omit to use the flags below"),
    onnx_model: Optional[Path] = typer.Option(None, "--onnx", help="ONNX model file"),
    torch_model: Optional[str] = typer.Option(None, "--torch", help="path/to/file.py:factory"),
    pt2_model: Optional[Path] = typer.Option(None, "--pt2", help="torch.export .pt2 file"),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="static input shape, e.g. 1,3,224,224"),
    calib: Optional[str] = typer.Option(None, "--calib", help="calibration data (.npy/.npz/folder/file.py:fn)"),
    eval_data: Optional[str] = typer.Option(None, "--eval", help="evaluation data, labelled or not"),
    targets: Optional[str] = typer.Option(None, "--targets", help="comma-separated target names or .toml paths"),
    out_dir: Path = typer.Option(Path("dist"), "--out", help="where dist/<name>-<version>/ goes"),
    name: Optional[str] = typer.Option(None, "--name", help="release name (default: model file stem)"),
    version: str = typer.Option("0.1.0", "--version"),
    calibration_method: Optional[str] = typer.Option(None, "--calibration-method", help="minmax | percentile | entropy"),
    calibration_samples: int = typer.Option(200, "--calibration-samples"),
    latency_runs: int = typer.Option(50, "--latency-runs"),
    tflite_io: Optional[str] = typer.Option(None, "--tflite-io", help="full-int8 TFLite I/O type: int8 | uint8 | float32"),
    tflite_layout: Optional[str] = typer.Option(None, "--tflite-layout", help="TFLite I/O layout: NHWC | NCHW"),
    emulate: bool = typer.Option(False, "--emulate", help="also verify ARM targets in an emulated device userland"),
    prune: Optional[float] = typer.Option(None, "--prune", help="torch only: prune this fraction of channels (0..1)"),
    prune_criterion: Optional[str] = typer.Option(None, "--prune-criterion", help="l1 | l2 | bn_scale | taylor | random"),
    prune_granularity: Optional[str] = typer.Option(None, "--prune-granularity", help="filter | fine | vector | kernel"),
    distill_epochs: Optional[int] = typer.Option(None, "--distill-epochs", help="distil from the unpruned model afterwards"),
    distill_mode: Optional[str] = typer.Option(None, "--distill-mode", help="weak (no labels) | strong (labels + features)"),
    distill_data: Optional[str] = typer.Option(None, "--distill-data", help="training data for distillation (default: --calib)"),
    lowrank_energy: Optional[float] = typer.Option(None, "--lowrank-energy", help="factorise Linear/1x1 layers keeping this energy"),
    json_out: bool = typer.Option(False, "--json", help="print the manifest as JSON on stdout"),
):
    """Build, verify and bundle a release; exit 1 if a gate fails."""
    from .config import config_from_dict, load_config
    from .pipeline import build as run_build

    sources = {"onnx": onnx_model, "torch": torch_model, "pt2": pt2_model}
    given = {k: v for k, v in sources.items() if v is not None}
    compress = _compress_flags(prune, prune_criterion, prune_granularity, distill_epochs, distill_mode, distill_data,
                               lowrank_energy)
    try:
        if config is not None:
            if given or calib or targets or compress:
                raise typer.BadParameter("give either CONFIG or --onnx/--torch/--pt2 with --calib and --targets, not both")
            cfg = load_config(config)
            if emulate:
                cfg = cfg.model_copy(update={"verify": cfg.verify.model_copy(update={"emulate": True})})
        else:
            if len(given) != 1 or not calib or not targets:
                raise typer.BadParameter("without CONFIG, give exactly one of --onnx/--torch/--pt2, plus --calib and --targets")
            kind, src = next(iter(given.items()))
            stem = Path(str(src).split(":")[0]).stem
            data = {
                "name": name or stem,
                "version": version,
                "out": str(out_dir),
                "model": {kind: str(src), "input_shape": _parse_shape(input_shape)},
                "data": {"calibration": calib, "evaluation": eval_data, "calibration_samples": calibration_samples},
                "targets": [t.strip() for t in targets.split(",") if t.strip()],
                "quantization": {"calibration_method": calibration_method},
                "verify": {"latency_runs": latency_runs, "emulate": emulate},
                "tflite": {"io_type": tflite_io, "layout": tflite_layout},
                "compress": compress,
            }
            cfg = config_from_dict(data, source="command line")
        # Progress bars are for people at a terminal; logs and pipes get none.
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, disable=not err.is_terminal) as progress:
            reporter = _RichReporter(progress)
            result = run_build(cfg, reporter)
            reporter.close()
    except EdgepackError as exc:
        _fail(exc)
    if json_out:
        out.print_json(json.dumps(result.manifest, default=str))
    else:
        _print_summary(result.manifest)
        out.print(f"bundle: {result.bundle}")
    for f in result.failures:
        sys.stderr.write(f"gate failed: {f}\n")
    raise typer.Exit(result.exit_code)


def _compress_flags(prune, criterion, granularity, epochs, mode, data, energy) -> dict:
    """The [compress] section the compression flags describe (unset flags keep the defaults)."""
    keep = lambda d: {k: v for k, v in d.items() if v is not None}  # noqa: E731
    section = {}
    if prune is not None or criterion or granularity:
        section["prune"] = keep({"ratio": prune, "criterion": criterion, "granularity": granularity})
    if epochs is not None or mode or data:
        section["distill"] = keep({"epochs": epochs, "mode": mode, "data": data})
    if energy is not None:
        section["lowrank"] = {"energy": energy}
    return section


def _print_summary(m: dict) -> None:
    labelled = m["data"]["evaluation"]["labelled"]
    table = Table(title=f"{m['name']} {m['version']}: {'PASSED' if m['gates_passed'] else 'FAILED'}")
    for col in ("target", "artifact", "size KiB", "numerics", "top-1 %" if labelled else "SQNR dB", "p50 ms (host)", "gates"):
        table.add_column(col)
    for tname, t in m["targets"].items():
        for a in t["artifacts"]:
            mt = a["metrics"]
            nm = mt["numerics"][mt["gate_numerics"]]
            value = f"{nm['top1']:.2f}" if labelled else f"{nm['sqnr_db']:.1f}"
            table.add_row(tname, a["kind"], f"{a['size_bytes'] / 1024:.1f}", mt["gate_numerics"], value,
                          f"{mt['latency']['p50_ms']:.3f}", "pass" if mt["passed"] else "FAIL")
    out.print(table)
    if labelled:
        out.print(f"float baseline top-1: {m['baseline']['metrics']['top1']:.2f} %")


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="a dist/<name>-<version> folder"),
    target: Optional[str] = typer.Option(None, "--target"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    runs: int = typer.Option(50, "--runs"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the result JSON here"),
    emulate: bool = typer.Option(False, "--emulate", help="run ARM targets in an emulated device userland (qemu-user)"),
    merge: bool = typer.Option(False, "--merge", help="write device-exact results into the bundle's manifest and report"),
):
    """Re-verify a bundle from its own files (checksums, golden I/O, bundled eval data)."""
    from .bundle import _json_safe
    from .device import verify_bundle

    try:
        if emulate:
            result = _verify_emulated(bundle, target)
        else:
            result = verify_bundle(bundle, target, threads=threads, runs=runs)
        if merge:
            from .device_results import merge_into_bundle

            merge_into_bundle(bundle, result)
    except EdgepackError as exc:
        _fail(exc)
    if json_path:
        json_path.write_text(json.dumps(_json_safe(result), indent=2) + "\n")
    _print_device_result(result)
    raise typer.Exit(0 if result["passed"] else 1)


def _verify_emulated(bundle: Path, target: str | None) -> dict:
    """Run every ARM target of the bundle (or the one named) under qemu-user; one result."""
    from .bundle import read_manifest
    from .emulate import prepare_userland, run_device_runner
    from .errors import BundleError
    from .targets import TargetProfile, host_arch

    manifest = read_manifest(bundle)
    names = [target] if target else [t for t, v in manifest["targets"].items() if v["profile"]["cpu"]["arch"] != host_arch()]
    if not names:
        raise BundleError(f"{bundle}: no target of another CPU architecture to emulate (this host is {host_arch()})")
    merged: dict = {}
    for name in names:
        if name not in manifest["targets"]:
            raise BundleError(f"{bundle}: target {name!r} is not in this bundle (has: {', '.join(manifest['targets'])})")
        profile = TargetProfile.model_validate(manifest["targets"][name]["profile"])
        out.print(f"preparing the emulated {profile.cpu.model} userland (cached after the first time)…", highlight=False)
        result = run_device_runner(prepare_userland(profile), bundle, name)
        if not merged:
            merged = result
        else:
            merged["targets"].update(result["targets"])
            merged["problems"] += result["problems"]
            merged["passed"] = merged["passed"] and result["passed"]
    return merged


def _print_device_result(result: dict) -> None:
    for p in result["problems"]:
        sys.stderr.write(f"FAIL {p}\n")
    emulation = result.get("emulation")
    for tname, t in result["targets"].items():
        for a in t["artifacts"]:
            m = a.get("metrics")
            detail = a.get("error", "")
            if m:
                label = a["gate_numerics"] + (f", emulated {emulation['cpu']}" if emulation and a["gate_numerics"] == "device-exact" else "")
                detail = (f"top-1 {m['top1']:.2f} % " if "top1" in m else "") + f"SQNR {m['sqnr_db']:.1f} dB ({label} numerics, {a['runtime']})"
            out.print(f"{'PASS' if a['passed'] else 'FAIL'} {tname}/{a['kind']} {detail}", highlight=False)
    out.print("verified" if result["passed"] else "verification FAILED")


@app.command()
def merge(bundle: Path = typer.Argument(..., help="a dist/<name>-<version> folder"),
          result: Path = typer.Argument(..., help="JSON written by `python -m edgepack.device verify --json`")):
    """Merge a device runner's result (e.g. from a real Raspberry Pi) into the bundle's report."""
    from .device_results import merge_into_bundle
    from .errors import BundleError

    try:
        try:
            data = json.loads(result.read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{result}: not a readable device result JSON ({exc})") from None
        manifest = merge_into_bundle(bundle, data)
    except EdgepackError as exc:
        _fail(exc)
    out.print(f"merged into {bundle}/manifest.json and report.md: {manifest['status']}", highlight=False)
    raise typer.Exit(0 if manifest["gates_passed"] else 1)


@app.command("targets")
def list_targets(targets_dir: Optional[list[Path]] = typer.Option(None, "--targets-dir")):
    """List the target profiles edgepack knows."""
    from .targets import load_targets

    try:
        profiles = load_targets(targets_dir)
    except EdgepackError as exc:
        _fail(exc)
    table = Table()
    for col in ("name", "cpu", "threads", "artifacts", "int8 reduce_range", "description"):
        table.add_column(col, no_wrap=col in ("name", "threads"), overflow="fold")
    for name, p in sorted(profiles.items()):
        table.add_row(name, f"{p.cpu.model} ({p.cpu.arch})", str(p.threads), ", ".join(p.artifacts),
                      str(p.resolved_reduce_range()), p.description)
    out.print(table)


@app.command()
def inspect(artifact: Path, as_json: bool = typer.Option(False, "--json")):
    """Show an artifact's inputs/outputs, operator counts, size and quantisation."""
    from .inspect import inspect_artifact

    try:
        info = inspect_artifact(artifact)
    except EdgepackError as exc:
        _fail(exc)
    if as_json:
        out.print_json(json.dumps(info))
        return
    out.print(f"[bold]{info['path']}[/]  {info['format']}, {info['size_bytes']:,} bytes", highlight=False)
    for role in ("inputs", "outputs"):
        for t in info[role]:
            extra = f" scale={t['scale']} zero_point={t['zero_point']}" if t.get("scale") else ""
            out.print(f"  {role[:-1]:6} {t['name']}: {t['shape']} {t['dtype']}{extra}", highlight=False)
    out.print(f"  quantisation: {info['quantization']}", highlight=False)
    out.print(f"  weight tensor types: {info['weight_dtypes']}; weight bytes: {info['weight_bytes']:,}", highlight=False)
    if "tensor_dtypes" in info:
        out.print(f"  all tensor types: {info['tensor_dtypes']}", highlight=False)
    out.print("  operators: " + ", ".join(f"{k}×{v}" for k, v in info["op_counts"].items()), highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
