"""Verification: everything that measures an artifact and judges it, and nothing that builds.

This package is the closure a device needs (numpy and one runtime, no pydantic, no onnx,
no torch): `metrics` (accuracy, agreement, SQNR, latency), `gates` (verdicts from measured
numbers), `runtimes/` (one session interface over ONNX Runtime and LiteRT), `hostinfo`
(whose machine measured a number), `device` (the runner behind `python -m edgepack.device`),
`emulate` (running that runner in an emulated ARM userland).

Host-side modules here may use more: `host` and `compression` are the build host's side of
the same measurements, `diagnosis` measures each quantised node's error (onnx), `select`
chooses each target's default artifact, and `merge` folds a device's result into the typed
manifest (pydantic). The device runner imports none of them.
"""
