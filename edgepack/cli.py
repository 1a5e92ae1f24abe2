"""The `edgepack` command: a thin shell over the Python API; each verb is one API call.

Exit codes: 0 success / all gates passed, 1 a gate or verification failed (the bundle is
still written and marked failed), 2 bad input or usage, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Whatever
goes wrong is one line on stderr; `--debug` (anywhere on the command line) adds the traceback
of an unexpected error and lets third-party log output and warnings through.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import CALIBRATION_METHODS, PRUNE_CRITERIA, PRUNE_GRANULARITIES, TFLITE_IO_TYPES, TFLITE_LAYOUTS
from .errors import EdgepackError
from .progress import Reporter

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Turn a trained model into verified, per-device release artifacts.")
out = Console()
err = Console(stderr=True)


class _RichReporter(Reporter):
    """At a terminal: one live row for the running stage (spinner, inner progress, time) and
    a line per finished stage with its duration. Elsewhere (logs, pipes): silent."""

    def __init__(self, progress: Progress, console: Console):
        self._p, self._console = progress, console
        self._task = None

    def on_start(self, title: str) -> None:
        self._task = self._p.add_task(title, total=None)

    def on_progress(self, done: int, total: int | None, detail: str = "") -> None:
        if self._task is not None:
            self._p.update(self._task, completed=done, total=total,
                           **({"description": detail} if detail else {}))

    def on_end(self, title: str, seconds: float, ok: bool) -> None:
        if self._task is not None:
            self._p.remove_task(self._task)
            self._task = None
        if ok and self._console.is_terminal:
            self._console.print(f"[green]✓[/] {escape(title)} [dim]{seconds:.1f} s[/]", highlight=False)


def _progress() -> Progress:
    """The live display: transient (finished stages are printed as lines instead)."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, disable=not err.is_terminal, transient=True)


def _fail(exc: EdgepackError) -> None:
    # Plain write: messages contain "[model]"-style names that rich would read as markup,
    # and must stay one line whatever the terminal width. A refusal of what was verified
    # (a signature, a device result) is exit 1; anything else the user can fix is exit 2.
    from .errors import sigterm_received

    if sigterm_received():  # a stage wrapped the Terminated it was interrupted by
        sys.stderr.write("terminated (SIGTERM); nothing half-written was left\n")
        raise typer.Exit(143)
    code = getattr(exc, "exit_code", 2)
    sys.stderr.write(f"{'failed' if code == 1 else 'error'}: {' '.join(str(exc).split())}\n")
    raise typer.Exit(code)


_DEBUG = {"on": False}


def _set_debug(on: bool) -> None:
    """Quiet third-party logs and warnings (the one-line errors say what matters) unless `on`."""
    import logging
    import warnings

    _DEBUG["on"] = on
    if on:
        logging.disable(logging.NOTSET)
        warnings.resetwarnings()
    else:
        logging.disable(logging.WARNING)
        warnings.simplefilter("ignore")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        sys.stdout.write(f"edgepack {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print edgepack's version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an unexpected error, and "
                                                        "third-party log output and warnings.")] = False,
) -> None:
    if debug:
        _set_debug(True)


# `edgepack build`: every mistake is one `error:` line (exit 2) naming the flag, and all
# mistakes in the flags are reported together, so enumerations are checked with the config
# (where "did you mean" and the other problems are), not by the option parser: their help
# lists the choices.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _BuildCommand(typer.core.TyperCommand):
    """A flag the option parser refuses (a non-integer count, an unknown option) is one line
    too, not a usage box."""

    def parse_args(self, ctx, args):
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except _UsageError as exc:
            param = getattr(exc, "param", None)
            opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
            text = f"{opts[0]}: {_given_value(given, opts[0])}{exc.message}" if opts else exc.format_message()
            sys.stderr.write(f"error: {' '.join(text.split())}\n")
            raise typer.Exit(2) from None


def _given_value(args: list[str], opt: str) -> str:
    """`'abc': ` for `--opt abc` / `--opt=abc` in args, to quote what was refused."""
    for i, a in enumerate(args):
        if a == opt and i + 1 < len(args):
            return f"{args[i + 1]!r}: "
        if a.startswith(opt + "="):
            return f"{a[len(opt) + 1:]!r}: "
    return ""


def _choices(values, default: str) -> str:
    return f"{' | '.join(values)} (default: {default})"


def _parse_shape(text: str) -> tuple[list[int] | None, str | None]:
    """`1,3,224,224` or `1x3x224x224` -> ([1, 3, 224, 224], None); otherwise (None, what is wrong)."""
    parts = text.split(",") if "," in text else text.split("x")
    try:
        shape = [int(p.strip()) for p in parts]
    except ValueError:
        i, bad = next((i, p) for i, p in enumerate(parts, 1) if not p.strip().lstrip("+-").isdigit())
        return None, (f"{text!r} is not a list of integers such as 1,3,224,224 or 1x3x224x224 "
                      f"(dimension {i}, {bad.strip()!r}, is not an integer)")
    if any(d <= 0 for d in shape):
        return None, f"{text!r}: dimensions must be positive integers"
    return shape, None


def _input_flags(shapes: list[str], dtypes: list[str], problems: list) -> dict:
    """--input-shape / --input-dtype values as the config's [model] input_shape or inputs."""
    named: dict[str, dict] = {}
    plain = []
    for text in shapes:
        name, eq, dims = text.partition("=")
        if not eq:
            plain.append(text)
            continue
        name = name.strip()
        if not name:
            problems.append((("model", "input_shape"), f"{text!r}: expected NAME=DIMS, e.g. input_ids=1,64"))
            continue
        shape, problem = _parse_shape(dims) if dims.strip() else ([], None)  # NAME= is a scalar input
        if problem:
            problems.append((("model", "input_shape"), f"{name}: {problem}"))
        named.setdefault(name, {})["shape"] = shape
    for text in dtypes:
        name, eq, dtype = text.partition("=")
        if not eq or not name.strip():
            problems.append((("model", "input_dtype"), f"{text!r}: expected NAME=DTYPE, e.g. input_ids=int64"))
            continue
        named.setdefault(name.strip(), {})["dtype"] = dtype.strip()
    if plain and (named or len(plain) > 1):
        problems.append((("model", "input_shape"), "give one --input-shape DIMS for a single-input model, or "
                                                   "NAME=DIMS for each input, not both"))
        return {}
    if plain:
        shape, problem = _parse_shape(plain[0])
        if problem:
            problems.append((("model", "input_shape"), problem))
        return {"input_shape": shape}
    return {"inputs": named} if named else {}


def _task_flags(name: str | None, options: list[str], problems: list) -> dict | None:
    """--task / --task-option as the config's [task] section; option values are read as
    numbers or booleans where they look like one."""
    if name is None:
        if options:
            problems.append((("task", "options"), "--task-option needs --task NAME"))
        return None
    parsed = {}
    for text in options:
        key, eq, value = text.partition("=")
        if not eq or not key.strip():
            problems.append((("task", "options"), f"{text!r}: expected KEY=VALUE, e.g. anchors_axis=-1"))
            continue
        value = value.strip()
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        parsed[key.strip()] = {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value
    return {"name": name, "options": parsed}


def _drop_none(d: dict) -> dict:
    return {k: (_drop_none(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}


def _opt(*names: str, panel: str, help: str, **kw):
    return typer.Option(*names, help=help, rich_help_panel=panel, **kw)


_MODEL, _DATA, _OUT, _QUANT, _TFL = "Model", "Data", "Targets & output", "Quantisation", "TFLite"
_COMPRESS, _VERIFY = "Compression (torch only)", "Verification"


@app.command(cls=_BuildCommand)
def build(
    config: Annotated[Path | None, typer.Argument(help="edgepack.toml; omit to use the flags below")] = None,
    onnx_model: Annotated[Path | None, _opt("--onnx", panel=_MODEL, help="ONNX model file")] = None,
    torch_model: Annotated[str | None, _opt("--torch", panel=_MODEL, help="path/to/file.py:factory (runs that "
                                            "file's code: only for code you trust)")] = None,
    pt2_model: Annotated[Path | None, _opt("--pt2", panel=_MODEL, help="torch.export .pt2 file (one with pickled "
                                           "parts needs --trust-source)")] = None,
    trust_source: Annotated[bool, _opt("--trust-source", panel=_MODEL,
                                       help="load a .pt2 even if it holds pickled parts: unpickling runs code, "
                                            "so only for files you trust")] = False,
    input_shape: Annotated[list[str] | None, _opt("--input-shape", panel=_MODEL, metavar="[NAME=]DIMS",
                                                  help="static input shape, e.g. 1,3,224,224; per input of a "
                                                       "multi-input model: input_ids=1,64 (repeat the flag)")] = None,
    input_dtype: Annotated[list[str] | None, _opt("--input-dtype", panel=_MODEL, metavar="NAME=DTYPE",
                                                  help="a PyTorch model input's dtype, e.g. input_ids=int64 "
                                                       "(default float32; repeat the flag)")] = None,
    calib: Annotated[str | None, _opt("--calib", panel=_DATA,
                                      help="calibration data (.npy/.npz/folder/file.py:fn)")] = None,
    eval_data: Annotated[str | None, _opt("--eval", panel=_DATA, help="evaluation data, labelled or not")] = None,
    calibration_samples: Annotated[int | None, _opt("--calibration-samples", panel=_DATA,
                                                    help="default: 200")] = None,
    targets: Annotated[str | None, _opt("--targets", panel=_OUT,
                                        help="comma-separated target names or .toml paths")] = None,
    out_dir: Annotated[Path | None, _opt("--out", panel=_OUT,
                                         help="where <name>-<version>/ goes (default: dist)")] = None,
    name: Annotated[str | None, _opt("--name", panel=_OUT, help="release name (default: model file stem)")] = None,
    version: Annotated[str | None, _opt("--version", panel=_OUT, help="release version (default: 0.1.0)")] = None,
    json_out: Annotated[bool, _opt("--json", panel=_OUT, help="print the manifest as JSON on stdout")] = False,
    sign: Annotated[Path | None, _opt("--sign", panel=_OUT, metavar="KEY",
                                      help="sign the bundle with this ed25519 private key (PEM or 32 raw bytes; "
                                           "`edgepack keygen` makes one): writes manifest.sig and SHA256SUMS.sig")
                    ] = None,
    archive: Annotated[bool, _opt("--archive", panel=_OUT, help="also write <name>-<version>.tar.gz (reproducible) "
                                                               "and its .sha256 beside the bundle")] = False,
    calibration_method: Annotated[str | None, _opt("--calibration-method", panel=_QUANT, metavar="METHOD",
                                                   help=_choices(CALIBRATION_METHODS, "the target's"))] = None,
    tflite_io: Annotated[str | None, _opt("--tflite-io", panel=_TFL, metavar="TYPE", help="full-int8 model I/O: "
                                          + _choices(TFLITE_IO_TYPES, "the target's"))] = None,
    tflite_layout: Annotated[str | None, _opt("--tflite-layout", panel=_TFL, metavar="LAYOUT", help="4-D I/O layout: "
                                              + _choices(TFLITE_LAYOUTS, "the target's"))] = None,
    prune: Annotated[float | None, _opt("--prune", panel=_COMPRESS,
                                        help="prune this fraction of channels (0..1)")] = None,
    prune_criterion: Annotated[str | None, _opt("--prune-criterion", panel=_COMPRESS, metavar="NAME",
                                                help=_choices(PRUNE_CRITERIA, "l2"))] = None,
    prune_granularity: Annotated[str | None, _opt("--prune-granularity", panel=_COMPRESS, metavar="NAME",
                                                  help=_choices(PRUNE_GRANULARITIES, "filter"))] = None,
    distill_epochs: Annotated[int | None, _opt("--distill-epochs", panel=_COMPRESS,
                                               help="distil from the unpruned model afterwards")] = None,
    distill_mode: Annotated[str | None, _opt("--distill-mode", panel=_COMPRESS, metavar="MODE",
                                             help="weak (no labels) | strong (labels + features) "
                                                  "(default: weak)")] = None,
    distill_data: Annotated[str | None, _opt("--distill-data", panel=_COMPRESS,
                                             help="training data for distillation (default: --calib)")] = None,
    lowrank_energy: Annotated[float | None, _opt("--lowrank-energy", panel=_COMPRESS,
                                                 help="factorise Linear/1x1 layers keeping this energy")] = None,
    task: Annotated[str | None, _opt("--task", panel=_VERIFY, metavar="NAME",
                                     help="judge artifacts on the model's task: classification, detection, "
                                          "segmentation, embedding, sequence, regression")] = None,
    task_option: Annotated[list[str] | None, _opt("--task-option", panel=_VERIFY, metavar="KEY=VALUE",
                                                  help="a task option, e.g. anchors_axis=-1 (repeat the flag)")] = None,
    latency_runs: Annotated[int | None, _opt("--latency-runs", panel=_VERIFY, help="default: 50")] = None,
    search_trials: Annotated[int | None, _opt("--search-trials", panel=_VERIFY, metavar="N",
                                              help="accuracy search: candidates tried per int8 artifact that "
                                                   "fails a gate; 0 turns it off (default: 8)")] = None,
    emulate: Annotated[bool, _opt("--emulate", panel=_VERIFY,
                                  help="also verify ARM targets in an emulated device userland")] = False,
):
    """Build, verify and bundle a release; exit 1 if a gate fails."""
    from .config import config_from_dict, load_config
    from .errors import ConfigError
    from .preflight import preflight

    flags = {"--onnx": onnx_model, "--torch": torch_model, "--pt2": pt2_model, "--input-shape": input_shape or None,
             "--input-dtype": input_dtype or None,
             "--calib": calib, "--eval": eval_data, "--calibration-samples": calibration_samples,
             "--targets": targets, "--out": out_dir, "--name": name, "--version": version,
             "--calibration-method": calibration_method, "--tflite-io": tflite_io, "--tflite-layout": tflite_layout,
             "--prune": prune, "--prune-criterion": prune_criterion, "--prune-granularity": prune_granularity,
             "--distill-epochs": distill_epochs, "--distill-mode": distill_mode, "--distill-data": distill_data,
             "--lowrank-energy": lowrank_energy, "--latency-runs": latency_runs, "--task": task,
             "--search-trials": search_trials,
             "--task-option": task_option or None}
    try:
        if config is not None:
            ignored = [f for f, v in flags.items() if v is not None]
            if ignored:
                raise ConfigError(f"{', '.join(ignored)}: not used with a config file ({config} sets "
                                  f"{'these' if len(ignored) > 1 else 'this'}), so give either CONFIG or flags")
            cfg = load_config(config)
            if emulate:
                cfg = cfg.model_copy(update={"verify": cfg.verify.model_copy(update={"emulate": True})})
            if trust_source:
                cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"trust_source": True})})
        else:
            sources = {k: str(v) for k, v in {"onnx": onnx_model, "torch": torch_model, "pt2": pt2_model}.items()
                       if v is not None}
            problems: list = []
            model_inputs = _input_flags(input_shape or [], input_dtype or [], problems)
            task_section = _task_flags(task, task_option or [], problems)
            stem = Path(next(iter(sources.values())).split(":")[0]).stem if sources else "model"
            data = _drop_none({
                "name": name or stem,
                "version": version,
                "out": None if out_dir is None else str(out_dir),
                "model": {**sources, **model_inputs, "trust_source": trust_source or None},
                "data": {"calibration": calib, "evaluation": eval_data, "calibration_samples": calibration_samples},
                "targets": None if targets is None else [t.strip() for t in targets.split(",") if t.strip()],
                "quantization": {"calibration_method": calibration_method},
                "verify": {"latency_runs": latency_runs, "emulate": emulate or None},
                "search": {"max_trials": search_trials},
                "task": task_section,
                "tflite": {"io_type": tflite_io, "layout": tflite_layout},
                "compress": _compress_flags(prune, prune_criterion, prune_granularity, distill_epochs, distill_mode,
                                            distill_data, lowrank_energy),
            })
            cfg = config_from_dict(data, source="command line", style="flags", problems=problems)
        preflight(cfg)  # before the pipeline (and onnx, onnxruntime) is even imported
        if archive:  # the archive's place is checked before the build, so a refusal leaves the old bundle as it was
            from .archive import check_pack_destination

            check_pack_destination(Path(cfg.out).resolve() / f"{cfg.name}-{cfg.version}.tar.gz")
        key = None
        if sign is not None:  # a bad key is refused now, not after the build
            from .signing import load_private_key

            key = load_private_key(sign)
        from .pipeline import build as run_build

        # Progress bars are for people at a terminal; logs and pipes get none.
        with _progress() as progress:
            try:
                result = run_build(cfg, _RichReporter(progress, err), sign_key=key)
            except SystemExit as exc:  # user code (a factory, a data entry point) that was not caught where it ran
                raise EdgepackError(f"user code called sys.exit({exc.code!r}) during the build; no bundle was "
                                    "written") from None
    except EdgepackError as exc:
        _fail(exc)
    _print_build(result, json_out)
    if archive:
        _pack_after_build(result.bundle, json_out)
    raise typer.Exit(result.exit_code)


def _compress_flags(prune, criterion, granularity, epochs, mode, data, energy) -> dict:
    """The [compress] section the compression flags describe (unset flags keep the defaults)."""
    def keep(d: dict) -> dict:
        return {k: v for k, v in d.items() if v is not None}

    section = {}
    if prune is not None or criterion or granularity:
        section["prune"] = keep({"ratio": prune, "criterion": criterion, "granularity": granularity})
    if epochs is not None or mode or data:
        section["distill"] = keep({"epochs": epochs, "mode": mode, "data": data})
    if energy is not None:
        section["lowrank"] = {"energy": energy}
    return section


def _print_build(result, json_out: bool) -> None:
    if json_out:
        out.print_json(json.dumps(result.manifest.to_json()))
    else:
        _print_summary(result.manifest)
        out.print(f"bundle: {result.bundle}", highlight=False, soft_wrap=True)
    for f in result.failures:
        sys.stderr.write(f"failed: {f.text()}\n")


def _print_summary(m) -> None:
    """One row per artifact under its target's row; no column cuts an artifact kind."""
    labelled = m.data.evaluation.labelled
    # a task other than classification is judged on its first gated metric, so that is the column
    task_gate = next((g for t in m.targets.values() for g in t.gates.task), None)
    if task_gate is not None and m.model.task is not None and m.model.task.name == "classification":
        task_gate = None if labelled else task_gate
    table = Table(title=f"{m.name} {m.version}: {'PASSED' if m.gates_passed else 'FAILED'}", box=box.SIMPLE_HEAD,
                  padding=(0, 1), title_justify="left")
    table.add_column("target / artifact", no_wrap=True)
    table.add_column("KiB", justify="right", no_wrap=True)
    table.add_column(task_gate.metric.replace("_", " ") if task_gate is not None
                     else "top-1 %" if labelled else "SQNR dB", justify="right", no_wrap=True)
    table.add_column("numbers", no_wrap=True)
    table.add_column("p50 ms", justify="right", no_wrap=True)
    table.add_column("gates", no_wrap=True)
    for tname, t in m.targets.items():
        table.add_row(f"[bold]{escape(tname)}[/]", "", "", "", "", "pass" if t.passed else "[red]FAIL[/]")
        shipped = t.default.kind if t.default is not None else None
        for a in t.artifacts:
            mt = a.metrics
            nm = mt.numerics[mt.gate_numerics]
            if task_gate is not None:
                tm = nm.task.get(task_gate.metric)
                value = "–" if tm is None else f"{tm.value:.4g}"
            else:
                value = f"{nm.top1:.2f}" if labelled and nm.top1 is not None else f"{nm.sqnr_db:.1f}"
            lat = mt.device_latency or mt.latency
            table.add_row(f"  {a.kind}" + (" [bold]★ default[/]" if a.kind == shipped else ""),
                          f"{a.size_bytes / 1024:.1f}", value, mt.gate_numerics,
                          f"{lat.p50_ms:.3f}", "pass" if mt.passed else "[red]FAIL[/]")
        for n in t.not_produced:
            table.add_row(f"  {n.kind}", "–", "–", "not built", "–", "[red]FAIL[/]" if n.required else "skip")
    out.print(table)
    if labelled:
        out.print(f"float baseline top-1: {m.baseline.metrics.top1:.2f} %  (p50: host latency unless a device run "
                  "was merged)", highlight=False)
    out.print("★ default: the fastest artifact that passes its gates (report.md says why)", highlight=False)


def _pack_after_build(bundle: Path, json_out: bool) -> None:
    from .api import pack as run_pack

    try:
        path, digest = run_pack(bundle)
    except EdgepackError as exc:
        _fail(exc)
    line = f"archive: {path} (sha256 {digest}, also in {path.name}.sha256)\n"
    (sys.stderr if json_out else sys.stdout).write(line)


@app.command()
def pack(bundle: Path = typer.Argument(..., help="a dist/<name>-<version> folder"),
         out_file: Optional[Path] = typer.Option(None, "--out", help="the archive to write (default: "
                                                                      "<name>-<version>.tar.gz beside the bundle)")):
    """Write a reproducible .tar.gz of a bundle and FILE.sha256 beside it (verify it with `edgepack verify FILE`)."""
    from .api import pack as run_pack

    try:
        path, digest = run_pack(bundle, out_file)
    except EdgepackError as exc:
        _fail(exc)
    out.print(f"archive: {path}", highlight=False, soft_wrap=True)
    out.print(f"sha256: {digest}  ({path.name}.sha256)", highlight=False, soft_wrap=True)


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="a dist/<name>-<version> folder, or a .tar.gz made by `edgepack pack`"),
    target: Optional[str] = typer.Option(None, "--target", help="only this target"),
    artifacts: Optional[str] = typer.Option(None, "--artifacts",
                                            help="only these artifact kinds, comma-separated "
                                                 "(e.g. ort-float,ort-int8)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024),
    runs: int = typer.Option(50, "--runs", min=1, help="latency runs per artifact"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the result JSON here"),
    emulate: bool = typer.Option(False, "--emulate", help="run ARM targets in an emulated device userland (qemu-user)"),
    merge: bool = typer.Option(False, "--merge", help="write the result into the bundle's manifest and report"),
    key: Optional[Path] = typer.Option(None, "--key", metavar="PUB",
                                       help="refuse the bundle unless it is signed by this ed25519 public key and "
                                            "its files match the signed SHA256SUMS"),
):
    """Re-verify a bundle from its own files: checksums, golden I/O, bundled eval data, sizes measured."""
    from .api import verify as run_verify
    from .errors import BundleError
    from .manifest.jsonio import dumps

    kinds = [k.strip() for k in artifacts.split(",") if k.strip()] if artifacts else None
    try:
        with _progress() as progress:
            checked = run_verify(bundle, target=target, artifacts=kinds, threads=threads, runs=runs, emulate=emulate,
                                 merge=merge, key=key, reporter=_RichReporter(progress, err))
        if json_path:
            try:
                json_path.write_text(dumps(checked.result.model_dump(mode="json", by_alias=True)), encoding="utf-8")
            except OSError as exc:
                raise BundleError(f"{json_path}: cannot write the result ({exc.strerror})") from None
    except EdgepackError as exc:
        _fail(exc)
    if key is None and checked.result.passed:
        out.print("note: no --key: the files were measured and hashed, but the gate thresholds and checksums "
                  "are the manifest's own, which anyone can edit; sign bundles (build --sign) and verify with "
                  "--key to bind them", highlight=False, soft_wrap=True)
    _print_device_result(checked.result)
    if checked.manifest is not None:
        out.print(f"merged into {bundle}/manifest.json and report.md: {checked.manifest.status}", highlight=False)
        for f in checked.manifest.failures:
            sys.stderr.write(f"failed: {f.text()}\n")
    raise typer.Exit(checked.exit_code)


def _print_device_result(result) -> None:
    for p in result.problems:
        sys.stderr.write(f"FAIL {p.where}: {p.reason}\n")
    emulation = result.emulation
    for tname, t in result.targets.items():
        for a in t.artifacts:
            m = a.metrics
            detail = a.error or ""
            if m:
                label = a.gate_numerics + (f", emulated {emulation['cpu']}"
                                           if emulation and a.gate_numerics == "device-exact" else "")
                detail = (f"top-1 {m.top1:.2f} % " if m.top1 is not None else "") + \
                    f"SQNR {m.sqnr_db:.1f} dB ({label} numerics, {a.runtime})"
                if a.golden_ok is False:
                    detail += "; golden outputs differ from the float reference"
                failed = [f"{g.gate} ({g.metric} = {g.value if g.value is None else f'{g.value:.4g}'}, "
                          f"threshold {g.threshold})" for g in a.gates or [] if g.passed is False]
                if failed:
                    detail += f"; failed gates: {', '.join(failed)}"
            if a.passed:
                out.print(f"PASS {tname}/{a.kind} {detail}", highlight=False, soft_wrap=True)
            else:
                sys.stderr.write(f"FAIL {tname}/{a.kind} {detail}\n")
    out.print("verified" if result.passed else "verification FAILED")


@app.command()
def merge(bundle: Path = typer.Argument(..., help="a dist/<name>-<version> folder"),
          result: Path = typer.Argument(..., help="JSON written by `python -m edgepack.device verify --json`")):
    """Merge a device runner's result (e.g. from a real Raspberry Pi) into the bundle's report."""
    from .api import merge as run_merge

    signed = any((bundle / s).is_file() for s in ("manifest.sig", "SHA256SUMS.sig"))
    try:
        manifest = run_merge(bundle, result)
    except EdgepackError as exc:
        _fail(exc)
    out.print(f"merged into {bundle}/manifest.json and report.md: {manifest.status} (unsigned device result)"
              + ("; the bundle's signature no longer applies and was removed: sign it again with "
                 "`edgepack sign BUNDLE KEY`" if signed else ""), highlight=False, soft_wrap=True)
    for f in manifest.failures:
        sys.stderr.write(f"failed: {f.text()}\n")
    raise typer.Exit(0 if manifest.gates_passed else 1)


@app.command()
def keygen(key_file: Path = typer.Argument(..., metavar="OUT",
                                           help="the private key file to write; the public key goes to OUT.pub")):
    """Write a new ed25519 key pair for signing bundles (build --sign OUT, verify --key OUT.pub)."""
    from .signing import keygen as make_keys

    try:
        private, public = make_keys(key_file)
    except EdgepackError as exc:
        _fail(exc)
    out.print(f"private key: {private} (keep it secret; sign with `edgepack build --sign {private}`)", highlight=False,
              soft_wrap=True)
    out.print(f"public key: {public} (give it out; check with `edgepack verify BUNDLE --key {public}`)",
              highlight=False, soft_wrap=True)


@app.command()
def sign(bundle: Path = typer.Argument(..., help="a dist/<name>-<version> folder"),
         key_file: Path = typer.Argument(..., metavar="KEY", help="an ed25519 private key (PEM or 32 raw bytes)")):
    """(Re-)sign a bundle: SHA256SUMS, manifest.sig and SHA256SUMS.sig (e.g. after a merge)."""
    from .signing import sign_bundle

    try:
        from .manifest.files import read_manifest

        read_manifest(bundle)  # an edgepack bundle, with a valid manifest
        _refuse_tampered(bundle)
        written = sign_bundle(bundle, key_file)
    except EdgepackError as exc:
        _fail(exc)
    out.print(f"signed: {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)


def _refuse_tampered(bundle: Path) -> None:
    """A signature vouches for what the bundle holds: refuse (exit 1) a bundle that does not
    match its own manifest (an unlisted or changed file, a symlink), naming the first problem."""
    from .errors import VerificationFailed, and_more
    from .signing import SIGNATURES, SUMS
    from .verification.device import bundle_tampering, read_bundle_manifest

    problems = bundle_tampering(bundle, read_bundle_manifest(bundle))
    problems += [f"{name}: is not a plain file" for name in (SUMS, *SIGNATURES)
                 if (bundle / name).is_symlink() or ((bundle / name).exists() and not (bundle / name).is_file())]
    if problems:
        raise VerificationFailed(f"{bundle}: refused to sign: {problems[0]}{and_more(problems)}")


@app.command("targets")
def list_targets(targets_dir: Optional[list[Path]] = typer.Option(None, "--targets-dir",
                                                                   help="also read profiles from this folder")):
    """List the target profiles edgepack knows."""
    from .targets import load_targets

    try:
        profiles = load_targets(targets_dir)
    except EdgepackError as exc:
        _fail(exc)
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("cpu", no_wrap=True)
    table.add_column("thr", justify="right", no_wrap=True)
    table.add_column("weights", no_wrap=True)
    table.add_column("artifacts", no_wrap=True)
    for name, p in sorted(profiles.items()):
        bits = "7-bit" if p.resolved_reduce_range() else "8-bit"
        table.add_row(name, f"{p.cpu.model} ({p.cpu.arch})", str(p.threads), bits, "\n".join(p.artifacts))
        table.add_section()
    out.print(table)
    for name, p in sorted(profiles.items()):
        out.print(f"[bold]{escape(name)}[/]: {escape(p.description)}", highlight=False)
    out.print("[dim]thr: threads; weights: int8 weight bits (7-bit is reduce_range, for x86 int8 kernels "
              "without VNNI, which can saturate).[/]")


@app.command()
def inspect(artifact: Path = typer.Argument(..., help="an .onnx, .ort or .tflite file"),
            as_json: bool = typer.Option(False, "--json", help="print everything as JSON")):
    """Show an artifact's inputs/outputs, operator counts, size and quantisation."""
    from .api import inspect as run_inspect

    try:
        info = run_inspect(artifact)
    except EdgepackError as exc:
        _fail(exc)
    if as_json:
        out.print_json(info.model_dump_json())
        return
    out.print(f"[bold]{escape(info.path)}[/]", highlight=False, soft_wrap=True)
    out.print(f"{info.format}; {info.size_bytes:,} bytes, of which weights {info.weight_bytes:,}", highlight=False)
    out.print(f"quantisation: {info.quantization}", highlight=False)
    io = Table(box=box.SIMPLE_HEAD, padding=(0, 1), title="inputs and outputs", title_justify="left")
    for col in ("", "name", "shape", "dtype", "scale", "zero point"):
        io.add_column(col, overflow="fold")
    for role in ("inputs", "outputs"):
        for t in getattr(info, role):
            scale = t.get("scale")
            io.add_row(role[:-1], t["name"], str(t["shape"]), t["dtype"], "" if scale is None else f"{scale:.6g}",
                       "" if t.get("zero_point") is None else str(t["zero_point"]))
    out.print(io)
    types = Table(box=box.SIMPLE_HEAD, padding=(0, 1), title="tensor types", title_justify="left")
    types.add_column("kind")
    types.add_column("counts by dtype")
    types.add_row("weights", ", ".join(f"{k} {v}" for k, v in info.weight_dtypes.items()) or "none")
    if info.tensor_dtypes:
        types.add_row("activations", ", ".join(f"{k} {v}" for k, v in info.tensor_dtypes["activations"].items()))
    out.print(types)
    ops = Table(box=box.SIMPLE_HEAD, padding=(0, 1), title=f"operators ({sum(info.op_counts.values())})",
                title_justify="left")
    ops.add_column("operator", no_wrap=True)
    ops.add_column("count", justify="right")
    for k, v in sorted(info.op_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        ops.add_row(k, str(v))
    out.print(ops)


def main() -> None:
    """The console script: `--debug` is taken from anywhere on the command line; an unexpected
    error is one line (exit 2), Ctrl-C one line (exit 130)."""
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != "--debug"]
    _set_debug(debug)
    from .errors import Terminated, terminate_on_sigterm

    terminate_on_sigterm()
    try:
        code, message = _run_app()
    except Terminated:
        code, message = 143, "terminated (SIGTERM); nothing half-written was left"
    except KeyboardInterrupt:
        code, message = 130, "interrupted (Ctrl-C)"
    except Exception as exc:  # noqa: BLE001 - the top-level handler: one line, exit 2
        from .errors import one_line, sigterm_received

        if sigterm_received():  # Terminated, turned into another error by native code on its way up
            code, message = 143, "terminated (SIGTERM); nothing half-written was left"
        else:
            if _DEBUG["on"]:
                import traceback

                traceback.print_exc()
            code, message = 2, (f"error: unexpected {type(exc).__name__}: {one_line(exc)} "
                                "(run with --debug for the traceback)")
    if message:
        sys.stderr.write(message + "\n")
    sys.exit(code)


def _run_app() -> tuple[int, str]:
    """The app, not standalone: (exit code, one line for stderr or ""). Usage errors come back
    as click's exceptions (vendored by typer, known here by their class names) and become one
    line like every other refusal, instead of click's usage line and boxed message."""
    from .errors import Terminated

    try:
        code = app(standalone_mode=False)
    except typer.Abort as exc:  # Ctrl-C (or SIGTERM) inside a command
        if isinstance(_interrupt(exc), Terminated):
            return 143, "terminated (SIGTERM); nothing half-written was left"
        return 130, "interrupted (Ctrl-C)"
    except SystemExit as exc:
        return (exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2), ""
    except Exception as exc:
        names = {c.__name__ for c in type(exc).__mro__}
        if "ClickException" not in names:
            raise
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if "UsageError" in names and ctx is not None else ""
        return (getattr(exc, "exit_code", 2) or 2), f"error: {where}{' '.join(exc.format_message().split())}"
    if code == 130:  # typer turns Ctrl-C (and SIGTERM's Terminated) in a command into a silent exit 130
        from .errors import sigterm_received

        if sigterm_received():
            return 143, "terminated (SIGTERM); nothing half-written was left"
        return 130, "interrupted (Ctrl-C)"
    return (code if isinstance(code, int) else 0), ""


def _interrupt(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (Ctrl-C, or SIGTERM's Terminated) behind `exc`, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


if __name__ == "__main__":
    main()
