"""Task-level metrics on hand-made outputs: known answers, and the failures each task exists to catch."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.verification import detection
from edgepack.verification.metrics import sqnr_db, top1_agreement
from edgepack.verification.tasks import TASKS, ctc_greedy, levenshtein, make_task, samples

REPO = Path(__file__).resolve().parent.parent


def value(m: dict, name: str) -> float:
    return m[name]["value"]


def failed_gates(m: dict, gates: list[dict]) -> list[str]:
    """Metrics whose gate fails; a nan value fails (it could not be judged)."""
    bad = []
    for g in gates:
        v = m[g["metric"]]["value"]
        ok = v >= g["threshold"] if g["direction"] == "higher" else v <= g["threshold"]
        if math.isnan(v) or not ok:
            bad.append(g["metric"])
    return bad


def test_samples_merges_calls_and_batch():
    x = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert samples(x).shape == (6, 4)
    assert np.array_equal(samples(x)[4], x[1, 1])
    assert samples(np.arange(5)).shape == (5, 1)


# ---------------------------------------------------------------------------------------
# classification


def test_classification_argmax_per_sample_not_over_the_flattened_batch():
    # two calls of batch 2; the artifact gets the second sample of each call wrong, but the
    # largest score of each call is unchanged, so a flattened argmax sees no difference
    ref = np.array([[[5, 0, 0], [0, 4, 0]], [[0, 0, 3], [1, 0, 0]]], dtype=np.float32)
    out = np.array([[[5, 0, 0], [0, 0, 4]], [[0, 0, 3], [0, 1, 0]]], dtype=np.float32)
    assert top1_agreement(ref, out) == 100.0
    task = make_task("classification", {})
    m = task.measure([ref], [out])
    assert value(m, "top1_agreement") == 50.0
    assert value(m, "tie_fraction") == 0.0
    assert failed_gates(m, task.default_gates()) == ["top1_agreement"]
    assert failed_gates(task.measure([ref], [ref]), task.default_gates()) == []


def test_classification_ties_are_left_out():
    ref = np.array([[[1, 1, 0]], [[0, 2, 1]], [[3, 0, 0]]], dtype=np.float32)  # first row tied
    out = np.array([[[0, 0, 1]], [[0, 2, 1]], [[0, 0, 3]]], dtype=np.float32)
    m = make_task("classification", None).measure([ref], [out])
    assert value(m, "top1_agreement") == 50.0  # rows 2 and 3: one agrees
    assert value(m, "tie_fraction") == pytest.approx(100 / 3)
    saturated = np.full((4, 1, 5), 127.0)
    m = make_task("classification").measure([saturated], [saturated])
    assert math.isnan(value(m, "top1_agreement"))
    assert value(m, "tie_fraction") == 100.0


def test_classification_labels_top1_top5():
    scores = np.tile(np.arange(8, dtype=np.float32), (4, 1, 1))  # class 7 best, then 6, 5, ...
    labels = np.array([7, 3, 2, 0, 5])  # an extra label for a partial batch that was not run
    m = make_task("classification", {"output": 1}).measure([scores * 0, scores], [scores * 0, scores], labels)
    assert value(m, "top1") == 25.0  # only label 7
    assert value(m, "top5") == 50.0  # 7 and 3 are among 7..3
    with pytest.raises(ValueError, match="2 label"):
        make_task("classification").measure([scores], [scores], labels[:2])


def test_single_score_classification_judges_the_decision_not_an_argmax():
    """A wake-word or voice-activity model gives one probability per sample: an argmax over
    one column always agrees, so the decision score > 0.5 is what is compared."""
    from edgepack.verification.metrics import output_metrics

    ref = np.array([[[0.1]], [[0.9]], [[0.6]], [[0.2]]], dtype=np.float32)
    out = np.array([[[0.0]], [[0.4]], [[0.7]], [[0.0]]], dtype=np.float32)  # the second call flips
    assert top1_agreement(ref, out) == 100.0  # what an argmax says
    m = make_task("classification").measure([ref], [out], np.array([0, 1, 1, 1]))
    assert value(m, "top1_agreement") == 75.0
    assert value(m, "top1") == 50.0  # decisions 0, 0, 1, 0 against labels 0, 1, 1, 1
    generic = output_metrics(ref.reshape(4, 1), out.reshape(4, 1), np.array([0, 1, 1, 1]))
    assert generic["top1_agreement"] == 75.0 and generic["top1"] == 50.0 and generic["top5"] is None
    logits = np.array([[[-3.0]], [[2.0]]], dtype=np.float32)  # scores outside [0, 1]: threshold 0
    m = make_task("classification").measure([logits], [np.array([[[-1.0]], [[-0.5]]], dtype=np.float32)])
    assert value(m, "top1_agreement") == 50.0


# ---------------------------------------------------------------------------------------
# detection


def head(rows, classes=3, anchors=40):
    """One call's `[1, N, 4 + C]` head: the given rows (cx, cy, w, h, class, score), rest empty."""
    h = np.zeros((1, anchors, 4 + classes), dtype=np.float32)
    h[0, :, :4] = [320, 320, 4, 4]  # background anchors: small boxes scoring 0
    for i, (cx, cy, w, h_, c, s) in enumerate(rows):
        h[0, i, :4] = [cx, cy, w, h_]
        h[0, i, 4 + c] = s
    return h


OBJECTS = [(100, 100, 50, 50, 0, 0.9), (300, 200, 80, 40, 1, 0.8), (500, 400, 60, 120, 2, 0.7)]


def test_decode_box_format_threshold_and_class_aware_nms():
    rows = [(100, 100, 40, 20, 0, 0.9), (102, 100, 40, 20, 0, 0.6),  # same class, overlapping: one stays
            (100, 100, 40, 20, 1, 0.5),  # other class, same place: stays
            (300, 300, 10, 10, 2, 0.2)]  # below the score threshold
    task = make_task("detection", {"anchors_axis": -2})
    [(boxes, scores, classes)] = task.decode(head(rows)[None])
    assert np.allclose(boxes, [[80, 90, 120, 110], [80, 90, 120, 110]])
    assert np.allclose(scores, [0.9, 0.5])
    assert classes.tolist() == [0, 1]
    xyxy = make_task("detection", {"box_format": "xyxy", "anchors_axis": -2})
    [(boxes, _, _)] = xyxy.decode(head([(10, 20, 30, 40, 0, 0.9)])[None])
    assert boxes.tolist() == [[10, 20, 30, 40]]


def test_nms_suppresses_above_the_iou_threshold_only():
    boxes = np.array([[0, 0, 40, 10], [12, 0, 52, 10], [17, 0, 57, 10]], dtype=float)  # IoU 28/52, 23/57 with box 0
    assert detection.box_iou(boxes[:1], boxes[1:]).tolist() == [[28 / 52, 23 / 57]]
    kept = detection.nms(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, dtype=np.int64), 0.45, 300)
    assert kept.tolist() == [0, 2]
    assert detection.nms(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, dtype=np.int64), 0.45, 1).tolist() == [0]


def test_decode_objectness_and_transposed_layouts():
    h = np.zeros((1, 1, 10, 4 + 1 + 2), dtype=np.float32)
    h[0, 0, :2] = [[50, 50, 10, 10, 0.5, 0.9, 0.1], [150, 50, 10, 10, 0.2, 0.0, 0.9]]  # 0.45 and 0.18
    task = make_task("detection", {"objectness": True, "anchors_axis": -2})
    [(boxes, scores, classes)] = task.decode(h)
    assert np.allclose(scores, [0.45]) and classes.tolist() == [0]
    wide = np.swapaxes(np.repeat(h, 3, axis=2), -1, -2)  # [1, 7, 30]: YOLOv8's export layout
    for axis in (-1, "auto"):
        [(b, s, c)] = make_task("detection", {"objectness": True, "anchors_axis": axis}).decode(wide)
        assert np.allclose(s, [0.45]) and np.allclose(b, boxes)


def test_detection_precision_recall_against_float():
    ref = np.stack([head(OBJECTS), head(OBJECTS[:1])])  # 2 calls: 3 + 1 float detections
    moved = [(100, 100, 50, 50, 0, 0.9), (300 + 60, 200, 80, 40, 1, 0.8),  # IoU 1/7 < 0.5: no match
             (500, 400, 60, 120, 1, 0.7),  # right place, wrong class
             (600, 600, 30, 30, 0, 0.6)]  # not in float
    out = np.stack([head(moved), head([(104, 100, 50, 50, 0, 0.5)])])  # second call: IoU 46/54
    task = make_task("detection", {})
    m = task.measure([ref], [out])
    assert value(m, "precision") == pytest.approx(100 * 2 / 5)
    assert value(m, "recall") == pytest.approx(100 * 2 / 4)
    assert value(m, "f1") == pytest.approx(2 * 40 * 50 / 90)
    assert value(m, "matched_iou_mean") == pytest.approx(100 * (1 + 46 / 54) / 2)
    same = task.measure([ref], [ref])
    assert [value(same, k) for k in ("precision", "recall", "f1", "matched_iou_mean")] == [100.0] * 4


def test_detection_with_nothing_detected():
    task = make_task("detection", {"anchors_axis": -2})
    empty, some = head([])[None], head(OBJECTS[:2])[None]
    both = task.measure([empty], [empty])
    assert value(both, "precision") == value(both, "recall") == 100.0
    assert math.isnan(value(both, "matched_iou_mean"))
    extra = task.measure([empty], [some])
    assert value(extra, "precision") == value(extra, "recall") == 0.0
    # a sample where float finds nothing adds nothing to recall; its artifact detections lower precision
    m = task.measure([np.concatenate([some, empty])], [np.concatenate([some, some])])
    assert value(m, "recall") == 100.0 and value(m, "precision") == 50.0


def test_detector_with_zeroed_class_scores_fails_while_its_sqnr_looks_fine():
    rng = np.random.default_rng(0)
    calls = []
    for _ in range(8):
        objs = [(x, y, 40, 40, int(rng.integers(3)), float(rng.uniform(0.5, 1)))
                for x, y in zip(rng.uniform(30, 610, 5).round(), rng.uniform(30, 610, 5).round())]
        calls.append(head(objs, anchors=100))
    ref = np.stack(calls)
    broken = ref.copy()
    broken[..., 4:] = 0  # int8 class scores collapsed to zero
    assert sqnr_db(ref, broken) > 20  # the whole output still "looks" fine
    task = make_task("detection", {})
    m = task.measure([ref], [broken])
    assert value(m, "recall") == 0.0
    assert sorted(failed_gates(m, task.default_gates())) == ["precision", "recall"]
    assert failed_gates(task.measure([ref], [ref]), task.default_gates()) == []


def test_map50_known_values():
    gt = [np.array([[0, 0, 0, 10, 10], [0, 20, 0, 30, 10]])]
    box = {"a": [0, 0, 10, 10], "b": [20, 0, 30, 10], "miss": [50, 50, 60, 60]}

    def dets(*named):
        boxes = np.array([box[n] for n, _ in named], dtype=float).reshape(-1, 4)
        return [(boxes, np.array([s for _, s in named], dtype=float), np.zeros(len(named), dtype=np.int64))]

    assert detection.mean_average_precision(dets(("a", 0.9), ("b", 0.8)), gt) == 1.0
    assert detection.mean_average_precision(dets(("a", 0.9), ("miss", 0.8)), gt) == 0.5
    # FP, TP, TP: precision 0, 1/2, 2/3 at recall 0, 1/2, 1; all-point interpolation gives 2/3 to both steps
    assert detection.mean_average_precision(dets(("miss", 0.9), ("a", 0.8), ("b", 0.7)), gt) == pytest.approx(2 / 3)
    # a duplicate of a found box is a false positive; a class without ground truth is ignored
    assert detection.mean_average_precision(dets(("a", 0.9), ("a", 0.8)), gt) == 0.5
    assert math.isnan(detection.mean_average_precision(dets(("a", 0.9)), [np.zeros((0, 5))]))


def test_detection_map50_from_labels():
    ref = head(OBJECTS)[None]
    labels = [np.array([[0, 75, 75, 125, 125], [1, 260, 180, 340, 220], [2, 470, 340, 530, 460]]), np.zeros((0, 5))]
    m = make_task("detection", {}).measure([ref], [ref], labels)
    assert value(m, "map50") == 100.0
    wrong = head([(r[0], r[1], r[2], r[3], (r[4] + 1) % 3, r[5]) for r in OBJECTS])[None]
    assert value(make_task("detection", {}).measure([ref], [wrong], labels), "map50") == 0.0


# ---------------------------------------------------------------------------------------
# segmentation


def test_segmentation_binary_iou_known():
    ref = np.zeros((3, 1, 1, 4, 4), dtype=np.float32)
    out = ref.copy()
    ref[0, 0, 0, :2, :2] = 1  # 4 pixels
    out[0, 0, 0, :2, :3] = 1  # 6 pixels, 4 shared: IoU 4/6
    ref[1, 0, 0, 0, 0] = 1  # 1 pixel, none shared: IoU 0
    out[1, 0, 0, 3, 3] = 1
    # third sample: both empty, IoU 1
    m = make_task("segmentation", {}).measure([ref], [out])
    assert value(m, "mean_iou") == pytest.approx(100 * (4 / 6 + 0 + 1) / 3)
    assert value(m, "worst_iou") == 0.0
    assert value(m, "pixel_agreement") == pytest.approx(100 * (48 - 2 - 2) / 48)


def test_segmentation_multiclass_channels_last_and_sigmoid():
    labels_ref = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])  # one sample, 2x4 pixels, 3 classes
    labels_out = np.array([[0, 1, 1, 1], [2, 2, 2, 2]])
    onehot = np.eye(3, dtype=np.float32)
    ref, out = onehot[labels_ref][None, None], onehot[labels_out][None, None]  # [M, B, H, W, C]
    m = make_task("segmentation", {"channel_axis": -1}).measure([ref], [out])
    assert value(m, "mean_iou") == pytest.approx(100 * (1 / 2 + 2 / 3 + 1) / 3)
    assert value(m, "pixel_agreement") == pytest.approx(100 * 7 / 8)
    chw = make_task("segmentation", {"channel_axis": 1}).measure([np.moveaxis(ref, -1, 2)], [np.moveaxis(out, -1, 2)])
    assert chw == m
    logits = np.array([[[[-3.0, 0.8, 3.0]]]])  # [M, B, H, W], no channel axis
    shifted = np.array([[[[-3.0, 0.9, 3.0]]]])
    sig = {"channel_axis": "none", "apply_sigmoid": True, "threshold": 0.7}  # logit(0.7) = 0.847
    assert value(make_task("segmentation", sig).measure([logits], [shifted]), "mean_iou") == 50.0


def test_segmentation_noise_keeps_masks_while_sqnr_is_low():
    rng = np.random.default_rng(1)
    ref = np.zeros((6, 1, 1, 32, 32), dtype=np.float32)
    ref[..., 8:16, 8:16] = 1.0  # object of 64 pixels in 1024
    out = ref + rng.uniform(-0.4, 0.4, ref.shape).astype(np.float32)
    task = make_task("segmentation", {})
    m = task.measure([ref], [out])
    assert sqnr_db(ref, out) < 5
    assert value(m, "mean_iou") == 100.0 and failed_gates(m, task.default_gates()) == []
    out[0, ..., 8:16, 8:12] = 0  # half the object lost in one sample
    m = task.measure([ref], [out])
    assert value(m, "worst_iou") == 50.0


# ---------------------------------------------------------------------------------------
# embedding, sequence, regression


def test_embedding_cosine():
    ref = np.array([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])
    out = np.array([[[0.0, 2.0]], [[3.0, 3.0]], [[0.0, 0.0]]])
    m = make_task("embedding", {"normalize": True}).measure([ref], [out])
    assert value(m, "cosine_mean") == pytest.approx(2 / 3)
    assert value(m, "cosine_worst") == pytest.approx(0.0)


def test_embedding_judges_direction_not_scale():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(200, 1, 64))
    task = make_task("embedding", {})
    scaled = ref * 2.5  # an output scale off: SQNR poor, retrieval unchanged
    assert sqnr_db(ref, scaled) < 0
    assert failed_gates(task.measure([ref], [scaled]), task.default_gates()) == []
    one_wrong = ref.copy()
    one_wrong[17] = rng.normal(size=(1, 64))
    m = task.measure([ref], [one_wrong])
    assert value(m, "cosine_mean") > 0.99
    assert failed_gates(m, task.default_gates()) == ["cosine_worst"]


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein([1, 2, 3], [1, 2, 3]) == 0


def path_logits(path: str, alphabet: str = "-abc") -> np.ndarray:
    """One-hot `[T, C]` scores for a CTC path, "-" being the blank (index 0)."""
    return np.eye(len(alphabet), dtype=np.float32)[[alphabet.index(ch) for ch in path]]


def test_ctc_greedy_decoding():
    assert ctc_greedy(path_logits("aab-b")[None]) == [[1, 2, 2]]
    assert ctc_greedy(path_logits("-aa--a-bbc")[None]) == [[1, 1, 2, 3]]
    assert ctc_greedy(path_logits("abac")[None], blank=2) == [[1, 1, 3]]  # "b" as blank splits the a's


def test_sequence_against_float_and_labels():
    ref = np.stack([path_logits("aab-b")[None], path_logits("ab-cc")[None]])  # [M=2, B=1, T=5, C=4]
    out = np.stack([path_logits("aab-b")[None], path_logits("ab-bc")[None]])  # "abbc": 1 edit of "abc"
    task = make_task("sequence", {})
    m = task.measure([ref], [out], labels=[[1, 2], [1, 2, 3, 3]])
    assert value(m, "exact_match") == 50.0
    assert value(m, "cer") == pytest.approx(100 * 1 / 6)
    assert value(m, "label_exact_match") == 0.0
    assert value(m, "label_cer") == pytest.approx(100 * 2 / 6)  # abb vs ab: 1; abbc vs abcc: 1
    assert sorted(failed_gates(m, task.default_gates())) == ["cer", "exact_match"]
    time_major = make_task("sequence", {"time_axis": 0}).measure([np.swapaxes(ref, 1, 2)], [np.swapaxes(out, 1, 2)])
    assert {k: v["value"] for k, v in time_major.items()} == {k: value(m, k) for k in ("exact_match", "cer")}
    halved = ref * 0.5  # a quantised output scale off by 2: SQNR 6 dB, same text
    assert sqnr_db(ref, halved) < 7 and failed_gates(task.measure([ref], [halved]), task.default_gates()) == []


def test_regression_per_output():
    big = np.full((4, 1, 100), 100.0)
    small = np.ones((4, 1, 10))
    out = [big * 1.001, small + 0.1]  # 60 dB and 20 dB
    pooled = sqnr_db(np.concatenate([big.ravel(), small.ravel()]), np.concatenate([o.ravel() for o in out]))
    assert pooled > 30  # the small output's damage vanishes in a pooled number
    task = make_task("regression", {"output_names": ["depth", "conf"]})
    m = task.measure([big, small], out)
    assert value(m, "sqnr_db[depth]") == pytest.approx(60.0)
    assert value(m, "sqnr_db[conf]") == pytest.approx(20.0)
    assert value(m, "cosine[conf]") == pytest.approx(1.0)
    assert value(m, "max_abs_error[depth]") == pytest.approx(0.1)
    assert value(m, "sqnr_db_min") == pytest.approx(20.0)
    assert failed_gates(m, task.default_gates()) == ["sqnr_db_min"]
    assert "sqnr_db[1]" in make_task("regression").measure([big, small], out)


# ---------------------------------------------------------------------------------------
# options, registry, gates, imports


@pytest.mark.parametrize("name, options, named", [
    ("detection", {"score_treshold": 0.3}, "score_treshold"),
    ("detection", {"box_format": "xywh"}, "box_format"),
    ("detection", {"iou_threshold": 1.5}, "iou_threshold"),
    ("detection", {"objectness": 1}, "objectness"),
    ("classification", {"output": -1}, "output"),
    ("segmentation", {"channel_axis": 0}, "channel_axis"),
    ("segmentation", {"apply_sigmoid": True, "threshold": 2.0}, "threshold"),
    ("sequence", {"time_axis": True}, "time_axis"),
    ("regression", {"output_names": "depth"}, "output_names"),
])
def test_bad_options_name_the_option(name, options, named):
    with pytest.raises(ValueError, match=f"'{named}'"):
        make_task(name, options)


def test_registry_and_mismatched_inputs():
    with pytest.raises(ValueError, match="unknown task 'detector'.*classification"):
        make_task("detector")
    with pytest.raises(ValueError, match="'custom' runs a user function"):
        make_task("custom")
    x = np.zeros((2, 1, 5))
    with pytest.raises(ValueError, match="'output' = 1"):
        make_task("classification", {"output": 1}).measure([x], [x])
    with pytest.raises(ValueError, match="shape"):
        make_task("embedding").measure([x], [x[:, :, :4]])
    with pytest.raises(ValueError, match="'anchors_axis'"):
        make_task("detection", {"anchors_axis": -2}).decode(np.zeros((1, 1, 20, 3)))


FAITHFUL = {
    "classification": [np.eye(5)[None].repeat(2, 0)],
    "detection": [head(OBJECTS)[None]],
    "segmentation": [np.eye(3)[None, None, :, :, None].repeat(4, -1)],
    "embedding": [np.arange(12.0).reshape(2, 2, 3)],
    "sequence": [path_logits("aab-b")[None, None]],
    "regression": [np.arange(12.0).reshape(2, 2, 3), np.ones((2, 1))],
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_default_gates_name_measured_metrics_and_pass_a_faithful_artifact(name):
    task = make_task(name)
    gates = task.default_gates()
    assert gates and all(set(g) == {"metric", "direction", "threshold"} for g in gates)
    m = task.measure(FAITHFUL[name], FAITHFUL[name])
    assert all(set(v) == {"value", "direction", "unit", "note"} and v["direction"] in ("higher", "lower")
               and v["unit"] in ("%", "dB", "") for v in m.values())
    assert {g["metric"] for g in gates} <= set(m)
    assert failed_gates(m, gates) == []


def test_imports_nothing_but_numpy():
    code = ("import sys; import edgepack.verification.tasks; "
            "bad = {m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'torch', 'pydantic', "
            "'scipy', 'sklearn', 'ai_edge_litert', 'tflite_runtime', 'typer', 'rich')}; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
