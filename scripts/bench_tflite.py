"""Benchmark edgepack's ONNX → TFLite path, side by side with onnx2tf when available.

For each ONNX model (files given, or architectures built from scripts/zoo.py with
random weights when none are given) it measures, in fresh subprocesses so imports count:
- edgepack: wall time to write float32 + full-integer int8 TFLite from the ONNX file with
  N calibration samples (clean → calibrate → convert → quantise);
- onnx2tf (only with --onnx2tf-python pointing at a Python that has onnx2tf and
  TensorFlow): wall time of `onnx2tf -oiqt` on the same file and the same samples;
then sizes and LiteRT latencies (XNNPACK, same threads, warm-up, p50) of both tools'
float32 and full-int8 files, and the ratios edgepack / onnx2tf.

    python scripts/bench_tflite.py [model.onnx ...] [--samples 200] [--threads 2]
        [--onnx2tf-python /path/to/tf-venv/bin/python]

Nothing is downloaded: calibration images are generated (fixed seed), and the sample
file onnx2tf would otherwise fetch for 3-channel inputs is written locally.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def smooth_images(n: int, shape, seed: int = 0) -> np.ndarray:
    """Random low-frequency images (NCHW), closer to real activations than white noise."""
    rng = np.random.default_rng(seed)
    _, c, h, w = shape
    f = 8 if h % 8 == 0 and w % 8 == 0 else 1
    x = rng.standard_normal((n, c, h // f, w // f)).astype(np.float32)
    return np.repeat(np.repeat(x, f, 2), f, 3)


def edgepack_worker(onnx_path: str, calib_path: str, out_dir: str) -> None:
    """Runs in a subprocess: the whole edgepack path for TFLite fp32 + int8."""
    import onnx

    from edgepack.stages.data import Dataset
    from edgepack.stages.graph import clean_float_graph
    from edgepack.stages.quantize import QuantSettings, calibrate, ranges_by_name
    from edgepack.tflite.convert import convert
    from edgepack.tflite.quantize import to_full_int8

    out = Path(out_dir)
    model = clean_float_graph(onnx.load(onnx_path), onnx_path)
    float_path = out / "float.onnx"
    onnx.save(model, str(float_path))
    x = np.load(calib_path)
    settings = QuantSettings(True, "uint8", "int8", "minmax", 99.999, False, False)
    ranges = ranges_by_name(calibrate(float_path, Dataset(x, None, calib_path), settings))
    fp32, io = convert(model)
    perm = io["inputs"][0]["perm"]
    int8 = to_full_int8(fp32, (np.transpose(x[i:i + 1], perm) for i in range(len(x))), io_type="int8", ranges=ranges)
    (out / "edgepack_float32.tflite").write_bytes(fp32)
    (out / "edgepack_full_integer_quant.tflite").write_bytes(int8)


def timed(cmd, cwd) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def latencies_ms(paths: list[Path], threads: int, rounds: int = 5, runs: int = 20, warmup: int = 10) -> list[float]:
    """p50 latency of each file, measured in interleaved rounds (A, B, A, B, …) so that
    background load or frequency changes hit every file alike; returns each file's
    median over rounds of the per-round p50."""
    from ai_edge_litert.interpreter import Interpreter

    sessions = []
    for path in paths:
        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        for _ in range(warmup):
            it.invoke()
        sessions.append(it)
    per_round = [[] for _ in paths]
    for _ in range(rounds):
        for i, it in enumerate(sessions):
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                it.invoke()
                times.append(time.perf_counter() - t0)
            per_round[i].append(float(np.percentile(np.asarray(times) * 1e3, 50)))
    return [float(np.median(r)) for r in per_round]


def zoo_models(out: Path) -> list[Path]:
    """Export a few architectures from scripts/zoo.py (needs torch)."""
    sys.path.insert(0, str(HERE))
    import torch
    import zoo

    from edgepack.stages.export import export_torch

    paths = []
    for name in ("mobilenet_v2", "resnet18"):
        torch.manual_seed(0)
        model = getattr(zoo, name)(num_classes=1000).eval()
        paths.append(export_torch(model, (1, 3, 224, 224), out / f"{name}.onnx"))
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--onnx2tf-python", type=Path, help="python of an environment with onnx2tf + tensorflow")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        edgepack_worker(*args.worker)
        return 0

    import onnx

    work = Path(tempfile.mkdtemp(prefix="bench-tflite-"))
    models = args.models or zoo_models(work)
    rows = []
    for model_path in models:
        shape = [d.dim_value for d in onnx.load(str(model_path)).graph.input[0].type.tensor_type.shape.dim]
        input_name = onnx.load(str(model_path)).graph.input[0].name
        d = work / model_path.stem
        d.mkdir(exist_ok=True)
        calib = smooth_images(args.samples, shape)
        np.save(d / "calib_nchw.npy", calib)
        t_ep, proc = timed([sys.executable, str(Path(__file__).resolve()), "--worker", str(model_path.resolve()),
                            str(d / "calib_nchw.npy"), str(d)], cwd=d)
        if proc.returncode:
            print(f"{model_path.name}: edgepack failed:\n{proc.stderr[-2000:]}")
            continue
        ep_files = [d / "edgepack_float32.tflite", d / "edgepack_full_integer_quant.tflite"]
        row = {"model": model_path.stem, "edgepack_s": t_ep,
               "edgepack_float32_mb": ep_files[0].stat().st_size / 1e6,
               "edgepack_int8_mb": ep_files[1].stat().st_size / 1e6}
        o2t_files = []
        if args.onnx2tf_python:
            o2t = d / "onnx2tf"
            o2t.mkdir(exist_ok=True)
            np.save(o2t / "calib_nhwc.npy", calib.transpose(0, 2, 3, 1))
            # onnx2tf fetches this file for 3-channel inputs unless it is in the working folder
            np.save(o2t / "calibration_image_sample_data_20x128x128x3_float32.npy",
                    np.random.default_rng(1).random((20, 128, 128, 3)).astype(np.float32))
            ones = json.dumps([[[[1.0] * shape[1]]]])
            zeros = json.dumps([[[[0.0] * shape[1]]]])
            t_o2t, proc = timed([str(args.onnx2tf_python), "-m", "onnx2tf", "-i", str(model_path.resolve()),
                                 "-o", "out", "-oiqt", "-cind", input_name, "calib_nhwc.npy", zeros, ones], cwd=o2t)
            f32 = next((o2t / "out").glob("*_float32.tflite"), None)
            i8 = next((o2t / "out").glob("*_full_integer_quant.tflite"), None)
            if proc.returncode or f32 is None or i8 is None:
                print(f"{model_path.name}: onnx2tf failed (exit {proc.returncode}):\n"
                      f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
            else:
                row.update({"onnx2tf_s": t_o2t, "onnx2tf_float32_mb": f32.stat().st_size / 1e6,
                            "onnx2tf_int8_mb": i8.stat().st_size / 1e6})
                o2t_files = [f32, i8]
        lat = latencies_ms(ep_files + o2t_files, args.threads)
        row["edgepack_float32_ms"], row["edgepack_int8_ms"] = lat[:2]
        if o2t_files:
            row["onnx2tf_float32_ms"], row["onnx2tf_int8_ms"] = lat[2:]
        rows.append(row)

    print(f"\nTFLite conversion, float32 + full-int8, {args.samples} calibration samples; latency: median of 5 "
          f"interleaved rounds of p50 over 20 runs, LiteRT default CPU path (XNNPACK), {args.threads} threads")
    for r in rows:
        print(f"\n{r['model']}")
        print(f"  edgepack: {r['edgepack_s']:6.1f} s   fp32 {r['edgepack_float32_mb']:6.2f} MB "
              f"{r['edgepack_float32_ms']:7.2f} ms   int8 {r['edgepack_int8_mb']:6.2f} MB "
              f"{r['edgepack_int8_ms']:7.2f} ms")
        if "onnx2tf_s" in r:
            print(f"  onnx2tf:  {r['onnx2tf_s']:6.1f} s   fp32 {r['onnx2tf_float32_mb']:6.2f} MB "
                  f"{r['onnx2tf_float32_ms']:7.2f} ms   int8 {r['onnx2tf_int8_mb']:6.2f} MB "
                  f"{r['onnx2tf_int8_ms']:7.2f} ms")
            print(f"  ratio edgepack/onnx2tf: time {r['edgepack_s'] / r['onnx2tf_s']:.3f}x, "
                  f"int8 latency {r['edgepack_int8_ms'] / r['onnx2tf_int8_ms']:.3f}x, "
                  f"fp32 latency {r['edgepack_float32_ms'] / r['onnx2tf_float32_ms']:.3f}x")
        else:
            print("  onnx2tf: not run (give --onnx2tf-python)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
