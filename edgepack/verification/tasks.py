"""Task-level metrics: an artifact judged on what the model is for. numpy only: runs on devices too.

Top-1 over the whole flattened output and one SQNR per output only fit a classifier with
batch 1. A detector whose int8 head zeroes every class score keeps ~25 dB of whole-output
SQNR (box coordinates dominate the signal) while it finds nothing; a segmentation map can
have a poor SQNR and identical masks. A task decodes the outputs the way the application
does and compares the artifact's decoded results with the float model's (and with labels).

Each task is a small class with one method, `measure`, registered by name in `TASKS` and
configured by a plain dict (the config's `[task]` section); `make_task(name, options)` builds
one. Inputs are the model's outputs, one array per output, stacked over calls: `(M,
*output_shape)` where `output_shape` starts with the batch axis. `measure` returns
`{name: {"value", "direction", "unit", "note"}}`, plain dicts so the device runner can write
them as JSON. Rates are in percent (IoU included); cosine similarity is a plain number in
[-1, 1]. A value that cannot be judged (e.g. agreement when every float top-1 is tied) is
nan, which a gate reads as failed.

`default_gates()` gives gates a practitioner would sign, `{"metric", "direction",
"threshold"}`; each class says why its numbers; `gates(thresholds)` is them with a
config's thresholds.

A `custom` task (`[task] metric = "file.py:fn"`, see `Custom`) measures with a user's
function. Building it imports that file, which runs its code: by design, like `[model]
torch = "file.py:factory"`. A bundle carries no code and none is ever run from one: the
device runner builds with `make_task(..., allow_custom=False)` and gets `CustomNotEvaluated`,
which measures nothing (its gates read as not judged).
"""

from __future__ import annotations

import itertools
import math
import os
from abc import ABC, abstractmethod

import numpy as np

from edgepack.errors import USER_CODE_ERRORS, ConfigError, what_raised
from edgepack.verification import detection
from edgepack.verification.metrics import max_abs_error, sqnr_db

NAN = float("nan")


def metric(value: float, direction: str, unit: str = "", note: str = "") -> dict:
    """One measured number: `direction` says which way is better ("higher" or "lower")."""
    return {"value": float(value), "direction": direction, "unit": unit, "note": note}


def samples(output: np.ndarray) -> np.ndarray:
    """One output stacked over calls, `(M, B, ...)`, as `(M*B, ...)`: one row per sample.

    An output with nothing beyond the call axis (`(M,)`) is one scalar sample per call.
    """
    a = np.asarray(output)
    return a.reshape(-1, 1) if a.ndim < 2 else a.reshape(-1, *a.shape[2:])


def levenshtein(a, b) -> int:
    """Edit distance (insertions, deletions, substitutions) between two sequences."""
    a, b = list(a), list(b)
    if len(a) < len(b):
        a, b = b, a
    row = list(range(len(b) + 1))  # one row of the DP table: decoded sequences are short
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def ctc_greedy(logits: np.ndarray, blank: int = 0) -> list[list[int]]:
    """Best-path CTC decoding of `[S, T, C]` scores: argmax per step, repeats collapsed, blanks dropped."""
    ids = logits.argmax(axis=-1)
    prev = np.concatenate([np.full((ids.shape[0], 1), -1), ids[:, :-1]], axis=1)
    keep = (ids != blank) & (ids != prev)
    return [row[k].tolist() for row, k in zip(ids, keep)]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of `[S, D]` arrays; two zero rows count as identical."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    dot = np.sum(a * b, axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = ~a.any(axis=1) & ~b.any(axis=1)
    return np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), np.where(both_zero, 1.0, 0.0))


# Option checks: (predicate, what a valid value is) for error messages that name the fix.
def _int(low: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low, f"an integer >= {low}"


def _fraction():
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1, "a number in (0, 1]"


def _number():
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a finite number"


def _bool():
    return lambda v: isinstance(v, bool), "true or false"


def _names():
    return lambda v: v is None or (isinstance(v, list) and all(isinstance(n, str) for n in v)), "a list of strings"


def _choice(*values):
    # type-strict: `true` must not pass as 1, nor 1.0 as an axis
    return lambda v: any(type(v) is type(x) and v == x for x in values), " or ".join(repr(x) for x in values)


class Task(ABC):
    """A model task: options in, named metrics of an artifact against the float model out."""

    name = ""
    # option -> (default, (predicate, description)); options not listed here are refused,
    # so a misspelt option fails loudly instead of silently keeping its default.
    OPTIONS: dict = {}

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            known = ", ".join(sorted(self.OPTIONS)) or "none"
            raise ValueError(f"task {self.name!r}: unknown option {', '.join(map(repr, unknown))} (known: {known})")
        self.options = {}
        for key, (default, (valid, expected)) in self.OPTIONS.items():
            value = options.get(key, default)
            if not valid(value):
                raise ValueError(f"task {self.name!r}: option {key!r} must be {expected}, got {value!r}")
            self.options[key] = value

    @abstractmethod
    def measure(self, reference: list[np.ndarray], test: list[np.ndarray], labels=None) -> dict[str, dict]:
        """Named metrics of `test` (an artifact's outputs) against `reference` (float's)."""

    def default_gates(self) -> list[dict]:
        return []

    def gates(self, thresholds: dict[str, float] | None = None) -> list[dict]:
        """The default gates, with `thresholds` (metric -> threshold, a config's `[task.gates]`)."""
        thresholds = thresholds or {}
        return [{**g, "threshold": thresholds.get(g["metric"], g["threshold"])} for g in self.default_gates()]

    def prepare(self, reference: list[np.ndarray], labels=None) -> None:
        """Called once with the float model's outputs (stacked as for `measure`) before any
        artifact is measured. Built-in tasks need nothing; `Custom` learns its metrics here."""
        return None

    def _output(self, reference: list, test: list) -> tuple[np.ndarray, np.ndarray]:
        """The chosen output of both models, after checking the two models' outputs line up."""
        _check_outputs(reference, test)
        i = self.options["output"]
        if i >= len(reference):
            raise ValueError(f"task {self.name!r}: option 'output' = {i}, but the model has {len(reference)} output(s)")
        return np.asarray(reference[i]), np.asarray(test[i])


def _check_outputs(reference: list, test: list) -> None:
    if len(reference) != len(test):
        raise ValueError(f"the artifact has {len(test)} output(s), the float model {len(reference)}")
    for i, (r, t) in enumerate(zip(reference, test)):
        if np.shape(r) != np.shape(t):
            raise ValueError(f"output {i}: artifact shape {np.shape(t)} differs from float {np.shape(r)}")


def _take_labels(labels, n: int, task: str):
    """The first `n` labels: a partial last batch was not run, so extra labels are expected."""
    if len(labels) < n:
        raise ValueError(f"task {task!r}: {len(labels)} label(s) for {n} sample(s)")
    return labels[:n]


def _gate(metric_name: str, direction: str, threshold: float) -> dict:
    return {"metric": metric_name, "direction": direction, "threshold": threshold}


class Classification(Task):
    """Class scores `[B, C]` (class axis last): top-1 agreement with float, top-1/top-5 with labels.

    Options: `output` (default 0). Labels: one integer class per sample.
    """

    name = "classification"
    OPTIONS = {"output": (0, _int(0))}

    def measure(self, reference, test, labels=None):
        ref, out = self._output(reference, test)
        ref = ref.reshape(-1, ref.shape[-1])  # every axis but the class axis is a sample
        out = out.reshape(-1, out.shape[-1])
        if ref.shape[1] == 1:  # one score per sample: a binary decision, not an argmax over one class
            return self._binary(ref[:, 0], out[:, 0], labels)
        # A tied (e.g. saturated) float top-1 has no right answer for the artifact to agree with.
        unique = np.sum(ref == ref.max(axis=1, keepdims=True), axis=1) == 1
        agree = ref.argmax(axis=1) == out.argmax(axis=1)
        judged = int(unique.sum())
        m = {
            "top1_agreement": metric(100.0 * agree[unique].mean() if judged else NAN, "higher", "%",
                                     f"{judged} of {len(ref)} samples with a unique float top-1"),
            "tie_fraction": metric(100.0 * (1 - unique.mean()), "lower", "%",
                                   "samples whose float top-1 is tied, left out of the agreement"),
        }
        if labels is not None:
            y = np.asarray(_take_labels(labels, len(out), self.name)).reshape(-1).astype(np.int64)
            ranked = np.argsort(-out, axis=1, kind="stable")
            for k in (1, 5):
                top = ranked[:, :k]
                m[f"top{k}"] = metric(100.0 * np.mean(np.any(top == y[:, None], axis=1)), "higher", "%",
                                      f"top-{k} accuracy against labels")
        return m

    def _binary(self, ref, out, labels):
        """A single score per sample (a wake-word or voice-activity probability, or a logit):
        the decision is score > 0.5 when every float score lies in [0, 1], else score > 0.
        Agreement is on that decision; top-1 against 0/1 labels; top-5 is not defined."""
        threshold = 0.5 if ref.min() >= 0 and ref.max() <= 1 else 0.0
        unique = ref != threshold
        agree = (ref > threshold) == (out > threshold)
        judged = int(unique.sum())
        m = {
            "top1_agreement": metric(100.0 * agree[unique].mean() if judged else NAN, "higher", "%",
                                     f"decision score > {threshold:g} agrees with float ({judged} of {len(ref)} "
                                     "samples; one score per sample)"),
            "tie_fraction": metric(100.0 * (1 - unique.mean()), "lower", "%",
                                   f"samples whose float score is exactly {threshold:g}, left out of the agreement"),
        }
        if labels is not None:
            y = np.asarray(_take_labels(labels, len(out), self.name)).reshape(-1).astype(np.int64)
            m["top1"] = metric(100.0 * np.mean((out > threshold).astype(np.int64) == y), "higher", "%",
                               f"accuracy of the decision score > {threshold:g} against 0/1 labels")
        return m

    def default_gates(self):
        # A faithful artifact only changes decisions that sit on a class boundary; 1 % is
        # that margin on a well-separated task. With hundreds of classes more float top-1s
        # are near-ties and 99 % can be strict: labels and the accuracy-drop gate judge better.
        return [_gate("top1_agreement", "higher", 99.0)]


class Detection(Task):
    """A YOLO-style head: detections decoded from both models and matched at IoU `match_iou`.

    Options: `output` (0); `layout` ("boxes_first": per anchor `[box(4), objectness?, class
    scores...]`); `box_format` ("cxcywh" or "xyxy"); `objectness` (false; true for YOLOv5);
    `anchors_axis` ("auto": the longer of the last two axes, since heads have thousands of
    anchors and at most hundreds of classes; -2 for `[B, N, 4+C]`, -1 for YOLOv8's `[B, 4+C,
    N]`); `score_threshold` (0.25); `iou_threshold` (0.45, NMS); `max_detections` (300);
    `match_iou` (0.5).

    Precision and recall are pooled over all samples: a sample where the float model finds
    nothing adds nothing to recall, and any artifact detection there lowers precision. With
    no detections on one side, the rate that divides by it is 100 if the other side found
    nothing either, else 0. Labels: one array `[K, 5]` per sample, rows `class, x1, y1, x2,
    y2` in the head's box units, give the artifact's `map50` (at the same score threshold).
    """

    name = "detection"
    OPTIONS = {
        "output": (0, _int(0)),
        "layout": ("boxes_first", _choice("boxes_first")),
        "box_format": ("cxcywh", _choice("cxcywh", "xyxy")),
        "objectness": (False, _bool()),
        "anchors_axis": ("auto", _choice("auto", -1, -2)),
        "score_threshold": (0.25, _number()),
        "iou_threshold": (0.45, _fraction()),
        "max_detections": (300, _int(1)),
        "match_iou": (0.5, _fraction()),
    }

    def decode(self, output: np.ndarray) -> list[tuple]:
        """Detections of every sample of one stacked head output."""
        o = self.options
        x = np.asarray(output)
        if x.ndim < 3:
            raise ValueError(f"task 'detection': output shape {x.shape[1:]} has no anchor and feature axes")
        axis = o["anchors_axis"]
        if axis == -1 or (axis == "auto" and x.shape[-1] > x.shape[-2]):
            x = np.swapaxes(x, -1, -2)
        x = x.reshape(-1, *x.shape[-2:])
        need = 6 if o["objectness"] else 5
        if x.shape[-1] < need:
            raise ValueError(f"task 'detection': {x.shape[-1]} values per anchor, a box and a class score need "
                             f"{need}; check option 'anchors_axis'")
        return [detection.decode(s, box_format=o["box_format"], objectness=o["objectness"],
                                 score_threshold=o["score_threshold"], iou_threshold=o["iou_threshold"],
                                 max_detections=o["max_detections"]) for s in x]

    def measure(self, reference, test, labels=None):
        ref, out = self._output(reference, test)
        ref_dets, out_dets = self.decode(ref), self.decode(out)
        ious = np.concatenate([detection.match(t, r, self.options["match_iou"]) for t, r in zip(out_dets, ref_dets)])
        matched, n_out, n_ref = len(ious), sum(len(d[0]) for d in out_dets), sum(len(d[0]) for d in ref_dets)
        precision = 100.0 * matched / n_out if n_out else (100.0 if not n_ref else 0.0)
        recall = 100.0 * matched / n_ref if n_ref else (100.0 if not n_out else 0.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        at = f"at IoU >= {self.options['match_iou']} with the same class"
        m = {
            "precision": metric(precision, "higher", "%", f"{matched} of {n_out} artifact detections match float {at}"),
            "recall": metric(recall, "higher", "%", f"{matched} of {n_ref} float detections matched {at}"),
            "f1": metric(f1, "higher", "%", "harmonic mean of precision and recall against float"),
            "matched_iou_mean": metric(100.0 * ious.mean() if matched else NAN, "higher", "%",
                                       "box overlap of matched pairs" if matched else "no matched detections"),
        }
        if labels is not None:
            # rows [class, x1, y1, x2, y2]; rows of class < 0 pad samples with fewer boxes
            truth = [t[t[:, 0] >= 0] for t in (np.asarray(t, np.float64).reshape(-1, 5)
                                               for t in _take_labels(labels, len(out_dets), self.name))]
            ap = detection.mean_average_precision(out_dets, truth, 0.5)
            m["map50"] = metric(100.0 * ap, "higher", "%", "artifact mAP@0.5 against labels (VOC all-point)"
                                if not math.isnan(ap) else "labels hold no boxes")
        return m

    def default_gates(self):
        # int8 moves boxes by a few pixels and scores by a few percent: detections near the
        # score threshold or at IoU ~0.5 may flip, far fewer than 5 %. A broken head (class
        # scores zeroed or saturated) loses nearly all of one or the other.
        return [_gate("recall", "higher", 95.0), _gate("precision", "higher", 95.0)]


class Segmentation(Task):
    """Masks from a score map, artifact's against float's: mean and worst IoU per sample, pixel agreement.

    Options: `output` (0); `channel_axis` (1, an axis of the output shape, batch being 0; or
    "none" for a map `[B, H, W]`); with one channel, a pixel is foreground when its score is
    above `threshold` (0.5), after a sigmoid when `apply_sigmoid` (false); with several,
    its class is the argmax over channels and a sample's IoU is the mean over the classes
    present in either mask. Two empty masks agree: IoU 100 %.
    """

    name = "segmentation"
    OPTIONS = {
        "output": (0, _int(0)),
        "threshold": (0.5, _number()),
        "apply_sigmoid": (False, _bool()),
        "channel_axis": (1, (lambda v: v == "none" or (isinstance(v, int) and not isinstance(v, bool) and v != 0),
                             'a non-zero axis of the output shape (0 is the batch axis) or "none"')),
    }

    def __init__(self, options=None):
        super().__init__(options)
        if self.options["apply_sigmoid"] and not 0 < self.options["threshold"] < 1:
            raise ValueError("task 'segmentation': option 'threshold' must be between 0 and 1 with apply_sigmoid")

    def masks(self, output: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Per-pixel classes `[S, pixels]` of a stacked output, and the classes whose IoU counts:
        the foreground of a binary map, every class (background included) of a multi-class one."""
        x = samples(output)
        axis = self.options["channel_axis"]
        if axis == "none":
            x = x.reshape(len(x), -1, 1)
        else:
            if not -x.ndim < axis < x.ndim:
                raise ValueError(f"task 'segmentation': option 'channel_axis' = {axis} is not an axis of an "
                                 f"output of {x.ndim} dimensions other than the batch axis")
            x = np.moveaxis(x, axis, -1).reshape(len(x), -1, x.shape[axis])
        if x.shape[-1] > 1:
            return x.argmax(axis=-1), list(range(x.shape[-1]))
        t = self.options["threshold"]
        # sigmoid(v) > t  <=>  v > logit(t): no exp() to overflow on large logits
        cut = math.log(t / (1 - t)) if self.options["apply_sigmoid"] else t
        return (x[..., 0] > cut).astype(np.int64), [1]

    def measure(self, reference, test, labels=None):
        ref, out = self._output(reference, test)
        (r, classes), (t, _) = self.masks(ref), self.masks(out)
        inter = np.stack([np.sum((r == c) & (t == c), axis=1) for c in classes], axis=1)
        union = np.stack([np.sum((r == c) | (t == c), axis=1) for c in classes], axis=1)
        present = union > 0
        iou = np.where(present, inter / np.maximum(union, 1), 0.0).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
        iou = np.where(present.any(axis=1), iou, 1.0)  # empty vs empty
        return {
            "mean_iou": metric(100.0 * iou.mean(), "higher", "%", "per-sample IoU of artifact vs float masks"),
            "worst_iou": metric(100.0 * iou.min(), "higher", "%", "lowest per-sample IoU"),
            "pixel_agreement": metric(100.0 * np.mean(r == t), "higher", "%", "pixels given the same class"),
        }

    def default_gates(self):
        # Quantisation flips pixels on object boundaries; for objects of some tens of pixels
        # across that costs a few IoU points. Below 90 % the masks differ in shape, not edge.
        return [_gate("mean_iou", "higher", 90.0)]



class Embedding(Task):
    """Embedding vectors (each sample flattened): cosine similarity of artifact to float.

    Options: `output` (0); `normalize` (false), accepted and without effect: cosine
    similarity ignores length, so it is the same with or without L2 normalisation.
    """

    name = "embedding"
    OPTIONS = {"output": (0, _int(0)), "normalize": (False, _bool())}

    def measure(self, reference, test, labels=None):
        ref, out = self._output(reference, test)
        ref, out = samples(ref), samples(out)
        cos = cosine_rows(ref.reshape(len(ref), -1), out.reshape(len(out), -1))
        return {
            "cosine_mean": metric(cos.mean(), "higher", "", "mean cosine similarity to the float vector"),
            "cosine_worst": metric(cos.min(), "higher", "", "lowest per-sample cosine similarity"),
        }

    def default_gates(self):
        # Nearest-neighbour search compares angles: a mean cosine of 0.99 is ~8 degrees off the
        # float vector, well inside typical gaps between classes; worst 0.95 (~18 degrees)
        # catches single inputs the artifact gets wrong, which a mean hides.
        return [_gate("cosine_mean", "higher", 0.99), _gate("cosine_worst", "higher", 0.95)]


class Sequence(Task):
    """CTC scores (a text recogniser), greedy-decoded: exact matches and token error rate vs float.

    Options: `output` (0); `time_axis` (1 for `[B, T, C]`, 0 for `[T, B, C]`); `blank` (0).
    Labels: one sequence of token ids per sample (blank excluded) give `label_exact_match`
    and `label_cer`. Error rates are edit distances summed over samples, divided by the
    total length of the reference sequences (at least 1), in percent.
    """

    name = "sequence"
    OPTIONS = {"output": (0, _int(0)), "time_axis": (1, _choice(0, 1)), "blank": (0, _int(0))}

    def decode(self, output: np.ndarray) -> list[list[int]]:
        x = np.asarray(output)
        if x.ndim != 4:
            raise ValueError(f"task 'sequence': output shape {x.shape[1:]} is not [B, T, C] or [T, B, C]")
        if self.options["time_axis"] == 0:
            x = np.swapaxes(x, 1, 2)
        if not self.options["blank"] < x.shape[-1]:
            raise ValueError(f"task 'sequence': option 'blank' = {self.options['blank']}, "
                             f"but the output has {x.shape[-1]} classes")
        return ctc_greedy(x.reshape(-1, *x.shape[2:]), self.options["blank"])

    def measure(self, reference, test, labels=None):
        ref, out = self._output(reference, test)
        ref_seq, out_seq = self.decode(ref), self.decode(out)
        m = _sequence_metrics(out_seq, ref_seq, "", "the float model's decoding")
        if labels is not None:
            # symbol ids; negative values pad shorter label sequences
            truth = [[int(v) for v in np.asarray(y).reshape(-1) if v >= 0]
                     for y in _take_labels(labels, len(out_seq), self.name)]
            m.update(_sequence_metrics(out_seq, truth, "label_", "labels"))
        return m

    def default_gates(self):
        # A recogniser's output is read whole: 95 % of strings identical allows the odd
        # near-tie step to flip; 2 % token errors is about one character in 50, which a
        # broken artifact (dropped or repeated characters everywhere) far exceeds.
        return [_gate("exact_match", "higher", 95.0), _gate("cer", "lower", 2.0)]


def _sequence_metrics(out: list, ref: list, prefix: str, against: str) -> dict:
    exact = np.mean([a == b for a, b in zip(out, ref)])
    errors = sum(levenshtein(a, b) for a, b in zip(out, ref))
    length = sum(len(b) for b in ref)
    return {
        f"{prefix}exact_match": metric(100.0 * exact, "higher", "%", f"decoded sequences equal to {against}"),
        f"{prefix}cer": metric(100.0 * errors / max(length, 1), "lower", "%",
                               f"{errors} token edits over {length} tokens of {against}"),
    }


class Regression(Task):
    """Every output compared as numbers: SQNR, cosine similarity and largest error per output.

    Options: `output_names` (a list of names, one per output, used in metric names:
    `sqnr_db[depth]`; default their indices: `sqnr_db[0]`). `sqnr_db_min` is the worst
    output's SQNR, so one gate covers all outputs.
    """

    name = "regression"
    OPTIONS = {"output_names": (None, _names())}

    def measure(self, reference, test, labels=None):
        _check_outputs(reference, test)
        names = self.options["output_names"] or [str(i) for i in range(len(reference))]
        if len(names) != len(reference):
            raise ValueError(f"task 'regression': option 'output_names' has {len(names)} name(s) "
                             f"for {len(reference)} output(s)")
        m = {}
        for name, r, t in zip(names, reference, test):
            r, t = np.asarray(r), np.asarray(t)
            m[f"sqnr_db[{name}]"] = metric(sqnr_db(r, t), "higher", "dB", "signal to error power vs float")
            m[f"cosine[{name}]"] = metric(cosine_rows(r.reshape(1, -1), t.reshape(1, -1))[0], "higher", "",
                                          "cosine similarity of the whole output to float")
            m[f"max_abs_error[{name}]"] = metric(max_abs_error(r, t), "lower", "", "in the output's own units")
        worst = min(v["value"] for k, v in m.items() if k.startswith("sqnr_db["))
        m["sqnr_db_min"] = metric(worst, "higher", "dB", "lowest SQNR over the outputs")
        return m

    def default_gates(self):
        # 30 dB is an error power 0.1 % of the signal's (RMS error ~3 %). One int8 layer alone
        # is ~40-50 dB; error adds up through depth, and a mis-scaled or broken layer drops the
        # output to 10-20 dB. Per output, because a small output can be wrecked unnoticed next
        # to a large one in a pooled number.
        return [_gate("sqnr_db_min", "higher", 30.0)]


# ---------------------------------------------------------------------------------------
# A user's metric function


_LOADED = itertools.count()  # a private module name per metric file loaded
EXPECTED_RETURN = ("a dict of named metrics, {name: {'value': number, 'direction': 'higher' or 'lower', "
                   "'unit'?: str, 'note'?: str}} or {name: (number, 'higher' or 'lower')}")


def split_entry_point(spec) -> tuple[str, str] | None:
    """("path/to/file.py", "function") of a `path/to/file.py:function` string, else None."""
    if not isinstance(spec, str):
        return None
    path, sep, func = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not func.isidentifier():
        return None
    return path, func


def load_metric(spec: str):
    """The function `function` of `path/to/file.py:function` (an absolute path).

    Imports the file, which runs its top-level code: by design, the config names it like a
    torch factory. The file is loaded from its path (importlib), not found on sys.path, and
    sys.path is left alone; the module is registered in sys.modules under a private name
    (dataclasses look their module up there). Raises ConfigError naming `spec`.
    """
    import importlib.util
    import inspect
    import sys
    from pathlib import Path

    split = split_entry_point(spec)
    if split is None:
        raise ConfigError(f"metric {spec!r} is not 'path/to/file.py:function'")
    path, func = Path(split[0]), split[1]
    if not path.is_file():
        raise ConfigError(f"{spec}: the metric file {path} does not exist")
    name = f"_edgepack_metric_{next(_LOADED)}_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"{spec}: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except USER_CODE_ERRORS as exc:  # user code: any failure (sys.exit, Ctrl-C too) is the user's to fix
        sys.modules.pop(name, None)
        raise ConfigError(f"{spec}: importing {path.name} failed ({what_raised(exc)})") from None
    fn = getattr(module, func, None)
    if fn is None:
        defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                         and getattr(v, "__module__", None) == name)
        raise ConfigError(f"{spec}: {path.name} defines no function {func!r}"
                          + (f" (it defines: {', '.join(defined)})" if defined else ""))
    if not callable(fn):
        raise ConfigError(f"{spec}: {func!r} is a {type(fn).__name__}, not a function")
    try:
        inspect.signature(fn).bind(None, None, None)
    except TypeError:
        raise ConfigError(f"{spec}: {func}{inspect.signature(fn)} cannot be called as "
                          f"{func}(reference, test, labels)") from None
    except ValueError:  # no signature to read (a builtin): the call itself will tell
        pass
    return fn


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def check_metric_result(result, where: str) -> dict[str, dict]:
    """A user metric function's return as `{name: metric(...)}`; ConfigError naming `where`
    (the function) and what was expected when it is anything else."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{where} returned {what}; expected {EXPECTED_RETURN}")

    if not isinstance(result, dict):
        raise bad("None" if result is None else f"a {type(result).__name__}")
    if not result:
        raise bad("an empty dict")
    out = {}
    for name, entry in result.items():
        if not isinstance(name, str) or not name.strip():
            raise bad(f"the metric name {name!r} (names are non-empty strings)")
        if isinstance(entry, dict):
            unknown = sorted(map(str, set(entry) - {"value", "direction", "unit", "note"}))
            if unknown:
                raise bad(f"{name!r} with unknown key(s) {', '.join(map(repr, unknown))}")
            if "value" not in entry or "direction" not in entry:
                raise bad(f"{name!r} without {'value' if 'value' not in entry else 'direction'!r}")
            value, direction = entry["value"], entry["direction"]
            unit, note = entry.get("unit", ""), entry.get("note", "")
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            (value, direction), unit, note = entry, "", ""
        else:
            raise bad(f"{name!r}: {entry!r}")
        if not _is_number(value):
            raise bad(f"{name!r} with value {value!r} (a {type(value).__name__}, not a number)")
        if not math.isfinite(float(value)):
            raise bad(f"{name!r} with value {float(value)} (values must be finite numbers)")
        if direction not in ("higher", "lower"):
            raise bad(f"{name!r} with direction {direction!r} (which way is better: 'higher' or 'lower')")
        for key, text in (("unit", unit), ("note", note)):
            if not isinstance(text, str):
                raise bad(f"{name!r} with {key} {text!r} (a string)")
        out[name] = metric(float(value), direction, unit, note)
    return out


class Custom(Task):
    """A user's metric function: `[task] metric = "file.py:function"` in a config.

    Option: `metric`, the function as an absolute `path/to/file.py:function` (the config
    resolves a relative one against its own folder). Building the task imports that file,
    which runs its code: by design, as for `[model] torch = "file.py:factory"`.

    The function is called as `fn(reference, test, labels)`: `reference` and `test` are the
    float model's and the artifact's outputs, one array per output stacked over calls (the
    arrays every task's `measure` gets, copies the function may change), and `labels` the
    evaluation labels or None. It returns named numbers with the way that is better:
    `{name: {"value": float, "direction": "higher" | "lower", "unit"?: str, "note"?: str}}`
    or `{name: (value, "higher" | "lower")}`. Anything else, and any exception it raises,
    is a ConfigError naming the function and what was expected.

    No gate by default: `gates({name: threshold})` gates the names given, each in the
    direction the function returned for it in `prepare` (the float model against itself).
    A gated name the function does not return is measured as nan with a note saying so,
    which fails its gate.
    """

    name = "custom"
    OPTIONS = {"metric": (None, (lambda v: split_entry_point(v) is not None and os.path.isabs(split_entry_point(v)[0]),
                                 'an absolute "path/to/file.py:function" (a config resolves a relative one)'))}

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.where = self.options["metric"]
        self.fn = load_metric(self.where)
        self.directions: dict[str, str] = {}  # name -> direction, as the function returned them
        self.gated: dict[str, str] = {}       # name -> direction of every gate `gates` made

    def call(self, reference: list[np.ndarray], test: list[np.ndarray], labels=None) -> dict[str, dict]:
        """The function's checked return (copies of the arrays in: the caller's stay as they are)."""
        copies = [np.array(r, copy=True) for r in reference], [np.array(t, copy=True) for t in test]
        y = None if labels is None else np.array(labels, copy=True)
        try:
            result = self.fn(*copies, y)
        except USER_CODE_ERRORS as exc:  # user code: any failure (sys.exit, Ctrl-C too) is one line
            raise ConfigError(f"{self.where} raised {what_raised(exc)}") from None
        result = check_metric_result(result, self.where)
        for name, m in result.items():
            known = self.directions.setdefault(name, m["direction"])
            if known != m["direction"]:
                raise ConfigError(f"{self.where} returned {name!r} with direction {m['direction']!r}, "
                                  f"earlier {known!r}; a metric's direction must not change")
        return result

    def prepare(self, reference, labels=None):
        self.call(reference, reference, labels)

    def gates(self, thresholds=None):
        out = []
        for name, threshold in (thresholds or {}).items():
            # A name never returned has no direction: "higher" is written, and its nan
            # value (see measure) fails the gate whichever way it points.
            direction = self.directions.get(name, "higher")
            self.gated[name] = direction
            out.append(_gate(name, direction, float(threshold)))
        return out

    def measure(self, reference, test, labels=None):
        _check_outputs(reference, test)
        m = self.call(reference, test, labels)
        for name, direction in self.gated.items():
            if name not in m:
                returned = ", ".join(sorted(m))
                m[name] = metric(NAN, direction, "", f"gated, but {self.where} did not return it "
                                                     f"(it returned: {returned})")
        return m


class CustomNotEvaluated(Task):
    """A custom metric where its code is not run: on a device. A bundle carries no code, and
    none is ever run from one; this task measures nothing, so its gates read as not judged."""

    name = "custom"

    def __init__(self, metric_spec: str | None = None):
        super().__init__({})
        self.metric_spec = metric_spec
        shown = f" {metric_spec}" if metric_spec else ""
        self.note = f"custom metric{shown} not evaluated here: a bundle carries no code"

    def measure(self, reference, test, labels=None):
        return {}


TASKS: dict[str, type] = {t.name: t for t in (Classification, Detection, Segmentation, Embedding, Sequence, Regression)}


def make_task(name: str, options: dict | None = None, *, allow_custom: bool = True) -> Task:
    """The task registered as `name`, configured by `options` (ValueError naming what is wrong).

    `custom` (options `{"metric": "/abs/path/file.py:function"}`) imports that file, which
    runs its code (ConfigError when it cannot be loaded). With `allow_custom=False` (the
    device runner: a manifest's task spec is data, never code to run) it is instead a
    `CustomNotEvaluated`, which measures nothing, whatever the options say.
    """
    if name == "custom":
        if not allow_custom:
            spec = (options or {}).get("metric") if isinstance(options, dict) else None
            return CustomNotEvaluated(spec if isinstance(spec, str) else None)
        if not (options or {}).get("metric"):
            raise ValueError("task 'custom' runs a user function: give option 'metric' = "
                             "\"/abs/path/file.py:function\" ([task] metric = \"file.py:function\" in a config)")
        return Custom(options)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)}, custom)")
    return TASKS[name](options)
