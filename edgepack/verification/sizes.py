"""Size gates judged from the bundle's files, not from the manifest's claims (host only).

The device runner (numpy and one runtime) cannot parse every format's constants, so it
judges the size gates on the ratios the manifest records. `edgepack verify` and `edgepack
merge` on the host measure them again: file bytes and constant payload bytes (`edgepack.inspection`) of each
artifact against the float artifact of the same runtime in its target (or the bundle's
baseline/model.float.onnx), and against the theoretical int8 size of that baseline graph,
and replaces the runner's size verdicts with verdicts on what it measured. A manifest that
claims small ratios for a float file swapped in for an int8 one (checksums fixed) then fails.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BundleError
from .gates import EIGHT_BIT, all_passed, evaluate_gates

SIZE_GATES = ("max_int8_size_ratio", "max_weight_ratio", "max_size_ratio")
MEASURED_NOTE = "measured from the bundle's files by edgepack verify"


class _Measure:
    def __init__(self, root: Path, manifest: dict):
        self.root, self.manifest = root, manifest
        self._weights: dict[str, int] = {}
        self._floor: dict | None = None

    def weights(self, rel: str) -> int:
        from ..inspection import weight_bytes

        if rel not in self._weights:
            self._weights[rel] = weight_bytes(self.root / rel)
        return self._weights[rel]

    def floor(self) -> dict:
        if self._floor is None:
            from ..inspection import int8_floor_by_runtime
            from ..stages.graph import load_onnx

            self._floor = int8_floor_by_runtime(load_onnx(self.root / self.manifest["baseline"]["path"]))
        return self._floor

    def ratios(self, target: dict, entry: dict) -> dict:
        floats = {a["runtime"]: a["path"] for a in target["artifacts"] if a["precision"] == "float32"}
        ref = floats.get(entry["runtime"], self.manifest["baseline"]["path"])
        path, ref_path = self.root / entry["path"], self.root / ref
        floor = self.floor().get(entry["runtime"])
        return {"size_ratio": path.stat().st_size / max(ref_path.stat().st_size, 1),
                "weight_ratio": self.weights(entry["path"]) / max(self.weights(ref), 1),
                "int8_size_ratio": self.weights(entry["path"]) / floor if floor else None}


def measured_ratios(root: Path | str, manifest: dict, wanted) -> dict[tuple[str, str], dict]:
    """{(target, kind): {size_ratio, weight_ratio, int8_size_ratio}} measured from the files
    for each (target, kind) in `wanted`. BundleError when one cannot be measured (its size
    gates are then not judged from the manifest's claim instead)."""
    measure = _Measure(Path(root), manifest)
    out = {}
    for tname, kind in wanted:
        target = manifest["targets"][tname]
        entry = next(a for a in target["artifacts"] if a["kind"] == kind)
        try:
            out[(tname, kind)] = measure.ratios(target, entry)
        except Exception as exc:  # noqa: BLE001 - no measured number, no verdict: the caller refuses
            raise BundleError(f"{entry['path']}: its size could not be measured from the file: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    return out


def regate_sizes(root: Path | str, manifest: dict, result: dict) -> dict:
    """`result` (a device runner's JSON result for this bundle) with every run artifact's
    size verdicts replaced by verdicts on ratios measured from the files; passed flags redone."""
    root = Path(root)
    measure = _Measure(root, manifest)
    for tname, tres in result["targets"].items():
        target = manifest["targets"][tname]
        gates = {g: target["gates"].get(g) for g in SIZE_GATES}
        entries = {a["kind"]: a for a in target["artifacts"]}
        for ares in tres["artifacts"]:
            if ares.get("gates") is None:  # not run (a missing or altered file): already failed
                continue
            entry = entries[ares["kind"]]
            try:
                ratios = measure.ratios(target, entry)
                verdicts = evaluate_gates(gates, metrics={}, baseline={}, precision=entry["precision"], ratios=ratios,
                                          latency=None, latency_is_device=False)
                for v in verdicts:
                    v["note"] = f"{v['note']}; {MEASURED_NOTE}"
            except Exception as exc:  # noqa: BLE001 - an unreadable artifact fails its size gates
                reason = " ".join(str(exc).split())[:200]
                verdicts = [{"gate": g, "metric": g[4:], "direction": "lower", "threshold": gates[g], "value": None,
                             "passed": False, "note": f"could not be measured from {entry['path']}: {reason}"}
                            for g in SIZE_GATES if gates[g] is not None and entry["precision"] in EIGHT_BIT]
            ares["gates"] = [v for v in ares["gates"] if v["gate"] not in SIZE_GATES] + verdicts
            ares["passed"] = ares.get("golden_ok") is not False and all_passed(ares["gates"])
        tres["passed"] = all(a["passed"] for a in tres["artifacts"])
    result["passed"] = not result["problems"] and all(t["passed"] for t in result["targets"].values())
    return result
