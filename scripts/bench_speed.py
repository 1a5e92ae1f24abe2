"""Is an artifact ever slower than what it replaces? Latency ratios, host-measured.

For each ONNX model: clean it as a build does, write the float and int8 `.ort` files with
edgepack's own converter for a target profile (default x86-64), and time, interleaved
(one run of each variant per round, order alternating) with the profile's thread count:

- float .ort / plain ONNX   (the plain file under ONNX Runtime's default session options)
- int8 .ort  / float .ort
- with --tflite: int8 .tflite / float32 .tflite (LiteRT)
- with --rewrite: the same after `edgepack.stages.rewrite.speed_rewrites` (one stage per
  --hard-swish mode), each artifact also against itself before the rewrites (all stages
  are timed in the same interleaved rounds), and the `int8_slowdown_causes` findings.

Ratios of medians are printed (an absolute time on a shared machine says little). The
int8 graphs are calibrated on `--calib` (an .npz keyed by input name, arrays (N, *shape))
when given, else on 16 random normal samples: speed does not depend on the ranges.

    python scripts/bench_speed.py /tmp/realmodels/ppocr-cls/model.onnx@x=1,3,48,192 --rewrite --tflite
    python scripts/bench_speed.py model.onnx --runs 200 --threads 1

A model argument is PATH, optionally followed by @NAME=D,D,... per input to fix.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgepack.config import QuantOverrides  # noqa: E402
from edgepack.stages.data import Dataset  # noqa: E402
from edgepack.stages.emit.ort import convert_to_ort  # noqa: E402
from edgepack.stages.graph import clean_float_graph  # noqa: E402
from edgepack.stages.quantize import quantize_static, resolve_settings  # noqa: E402
from edgepack.stages.rewrite import int8_slowdown_causes, speed_rewrites  # noqa: E402
from edgepack.targets import resolve_target  # noqa: E402


def parse_model(spec: str) -> tuple[Path, dict[str, tuple[int, ...]] | None]:
    path, *shapes = spec.split("@")
    fixed = {}
    for s in shapes:
        name, _, dims = s.partition("=")
        fixed[name] = tuple(int(d) for d in dims.split(",") if d)
    return Path(path), fixed or None


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()  # default options: what a user of the plain file gets
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class TfliteRunner:
    def __init__(self, data: bytes, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_content=data, num_threads=threads)
        self.it.allocate_tensors()
        self.inputs = self.it.get_input_details()
        rng = np.random.default_rng(0)
        for d in self.inputs:
            if np.issubdtype(d["dtype"], np.floating):
                x = rng.standard_normal(d["shape"]).astype(d["dtype"])
            else:
                x = np.zeros(d["shape"], d["dtype"])
            self.it.set_tensor(d["index"], x)

    def __call__(self):
        self.it.invoke()


def feeds_for(model: onnx.ModelProto, rng) -> dict[str, np.ndarray]:
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        shape = [d.dim_value for d in t.shape.dim]
        out[vi.name] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    return out


def calibration(model: onnx.ModelProto, npz: Path | None, n: int = 16) -> Dataset:
    feeds = feeds_for(model, np.random.default_rng(0))
    if npz is not None:
        data = np.load(npz)
        calls = {k: np.asarray(data[k])[:n].reshape(-1, *feeds[k].shape).astype(feeds[k].dtype) for k in feeds}
    else:
        rng = np.random.default_rng(1)
        calls = {k: np.stack([rng.standard_normal(v.shape).astype(v.dtype) for _ in range(n)]) for k, v in
                 feeds.items()}
    return Dataset(calls, None, str(npz or "random"))


def interleaved(variants: dict, runs: int, warmup: int = 3, clock=time.perf_counter) -> dict[str, float]:
    """Median seconds per variant; every round runs each variant once, order alternating.

    `clock=time.thread_time` (one thread: ONNX Runtime and LiteRT then compute on the
    calling thread) counts CPU time only, so other processes' load does not inflate it."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in variants}
    order = list(variants)
    for r in range(runs):
        for k in (order if r % 2 == 0 else order[::-1]):
            t0 = clock()
            variants[k]()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def build(float_path: Path, out: Path, profile, calib: Dataset, tflite: bool) -> dict[str, Path | bytes]:
    settings = resolve_settings(profile, QuantOverrides())
    made: dict[str, Path | bytes] = {"onnx": float_path}
    made["float.ort"], _ = convert_to_ort(float_path, out, "model.float32", profile.ort, layout_at_load=True)
    qdq = quantize_static(float_path, calib, settings, out / "model.int8.qdq.onnx")
    made["qdq"] = qdq
    made["int8.ort"], _ = convert_to_ort(qdq, out, "model.int8", profile.ort)
    if tflite:
        from edgepack.stages.emit.tflite import calibration_feeds
        from edgepack.tflite import quantize as tq
        from edgepack.tflite.convert import convert

        float_bytes, io = convert(onnx.load(str(float_path)), io_layout=profile.tflite.layout)
        made["float32.tflite"] = float_bytes
        made["int8.tflite"], _ = tq.quantize_full_int8(float_bytes, calibration_feeds(calib, io), io_type="float32")
    return made


def variants_of(label: str, made: dict, threads: int) -> dict:
    model = onnx.load(str(made["onnx"]))
    feed = feeds_for(model, np.random.default_rng(2))
    variants = {}
    for key in ("onnx", "float.ort", "int8.ort"):
        s = ort_session(made[key], threads)
        variants[(label, key)] = (lambda s=s: s.run(None, feed))
    for key in ("float32.tflite", "int8.tflite"):
        if key in made:
            variants[(label, key)] = TfliteRunner(made[key], threads)
    return variants


def report(label: str, p50: dict, base: str) -> None:
    t = {k: v for (lab, k), v in p50.items() if lab == label}
    b = {k: v for (lab, k), v in p50.items() if lab == base}
    print(f"  {label}: p50 ms " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in t.items()))
    ratios = {"float.ort / plain ONNX": t["float.ort"] / t["onnx"],
              "int8.ort / float.ort": t["int8.ort"] / t["float.ort"]}
    if "int8.tflite" in t:
        ratios["int8.tflite / float32.tflite"] = t["int8.tflite"] / t["float32.tflite"]
    if label != base:  # the same files before the rewrites, timed in the same rounds
        ratios.update({f"{k} vs {base}": t[k] / b[k] for k in t})
    print("    " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="PATH[@input=d,d,...]")
    ap.add_argument("--target", default="x86-64", help="target profile (name or .toml)")
    ap.add_argument("--threads", type=int, default=None, help="default: the profile's")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                    help="cpu: the calling thread's CPU time (needs --threads 1; robust on a loaded machine); "
                         "auto: cpu with one thread, else wall")
    ap.add_argument("--calib", type=Path, default=None, help=".npz keyed by input name (first model only)")
    ap.add_argument("--rewrite", action="store_true", help="also measure after speed_rewrites")
    ap.add_argument("--hard-swish", nargs="+", default=["keep"], choices=("keep", "int8", "fuse"),
                    help="speed_rewrites hard_swish mode(s) to measure with --rewrite (default: keep)")
    ap.add_argument("--tflite", action="store_true", help="also float32 vs int8 .tflite")
    args = ap.parse_args(argv)
    profile = resolve_target(args.target)
    threads = args.threads or profile.threads
    if args.clock == "cpu" and threads != 1:
        ap.error("--clock cpu needs --threads 1 (worker threads' time is not on the calling thread)")
    cpu = args.clock == "cpu" or (args.clock == "auto" and threads == 1)
    clock = time.thread_time if cpu else time.perf_counter
    print(f"target {profile.name}, {threads} thread(s), {args.runs} interleaved rounds, "
          f"{'CPU' if cpu else 'wall-clock'} time; ratios of medians")
    for i, spec in enumerate(args.models):
        path, shapes = parse_model(spec)
        with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
            tmp = Path(tmp)
            cleaned = clean_float_graph(onnx.load(str(path)), str(path), shapes)
            calib = calibration(cleaned, args.calib if i == 0 else None)
            stages = [("as built", cleaned, [])]
            if args.rewrite:
                for mode in args.hard_swish:
                    rewritten, changes = speed_rewrites(cleaned, hard_swish=mode)
                    stages.append((f"speed_rewrites(hard_swish={mode})", rewritten, changes))
            print(f"\n{path}")
            variants, made_by = {}, {}
            for label, model, changes in stages:
                if label != "as built":
                    print(f"  {label}: " + ("; ".join(changes) or "nothing to change"))
                d = tmp / "".join(c if c.isalnum() else "_" for c in label)
                d.mkdir()
                onnx.save(model, str(d / "model.float.onnx"))
                made_by[label] = build(d / "model.float.onnx", d, profile, calib, args.tflite)
                variants.update(variants_of(label, made_by[label], threads))
            p50 = interleaved(variants, args.runs, clock=clock)
            for label, _, _ in stages:
                report(label, p50, "as built")
                if args.rewrite:
                    made = made_by[label]
                    for finding in int8_slowdown_causes(made["onnx"], made["qdq"],
                                                        target_platform=profile.ort.target_platform):
                        print(f"    - {finding}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
