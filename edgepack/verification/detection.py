"""Decoding a YOLO-style detection head and comparing two sets of detections. numpy only: runs on devices too.

`edgepack.verification.tasks` judges detectors with these: an int8 head that zeroes every
class score keeps a high whole-output SQNR (box coordinates carry nearly all the signal)
while it detects nothing, so a detector is judged on its decoded detections instead.

Boxes are `[K, 4]` float64 corners `x1, y1, x2, y2` in the head's own coordinate units. One
sample's detections are a tuple `(boxes [K, 4], scores [K], classes [K])`, highest score first.
"""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in `a` [A, 4] with every box in `b` [B, 4]: [A, B].

    Boxes without area (x2 <= x1 or y2 <= y1) overlap nothing, even themselves.
    """
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    wh = np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None)
    return wh[:, 0] * wh[:, 1]


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Indices kept by class-aware greedy non-maximum suppression, highest score first.

    A box suppresses lower-scored boxes of its own class that overlap it by more than
    `iou_threshold`; boxes of other classes are untouched (a person on a bicycle keeps both).
    """
    x1, y1, x2, y2 = boxes.T
    area = _area(boxes)  # once: the loop below runs once per kept box
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0, None)
        inter = w * h
        union = area[i] + area[rest] - inter
        iou = inter / np.where(union > 0, union, 1.0)  # no union, no intersection: IoU 0
        order = rest[(iou <= iou_threshold) | (classes[rest] != classes[i])]
    return np.asarray(keep, dtype=np.int64)


def decode(pred: np.ndarray, *, box_format: str, objectness: bool, score_threshold: float,
           iou_threshold: float, max_detections: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample's head output `[N, 4 + (1) + C]` (one row per anchor) as detections.

    Each anchor keeps its best class; its score is that class score, times the objectness
    when the head has one (YOLOv5). Anchors scoring above `score_threshold` go through
    class-aware NMS, and at most `max_detections` remain.
    """
    pred = pred.astype(np.float64)
    boxes = pred[:, :4]
    if box_format == "cxcywh":
        half = boxes[:, 2:] / 2
        boxes = np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)
    class_scores = pred[:, 5:] if objectness else pred[:, 4:]
    classes = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(pred)), classes]
    if objectness:
        scores = scores * pred[:, 4]
    keep = scores > score_threshold
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    kept = nms(boxes, scores, classes, iou_threshold, max_detections)
    return boxes[kept], scores[kept], classes[kept]


def match(test: tuple, reference: tuple, min_iou: float) -> np.ndarray:
    """IoUs of the pairs greedy matching finds between two samples' detections.

    Test detections, highest score first, each take the not yet matched reference detection
    of the same class that they overlap most, if that overlap is at least `min_iou`.
    """
    t_boxes, t_scores, t_classes = test
    r_boxes, _, r_classes = reference
    if not len(t_boxes) or not len(r_boxes):
        return np.empty(0)
    iou = box_iou(t_boxes, r_boxes)
    iou[t_classes[:, None] != r_classes[None, :]] = -1.0
    taken = np.zeros(len(r_boxes), dtype=bool)
    matched = []
    for i in np.argsort(-t_scores, kind="stable"):
        candidates = np.where(taken, -1.0, iou[i])
        j = int(candidates.argmax())
        if candidates[j] >= min_iou:
            taken[j] = True
            matched.append(candidates[j])
    return np.asarray(matched, dtype=np.float64)


def mean_average_precision(detections: list[tuple], ground_truth: list, min_iou: float = 0.5) -> float:
    """mAP at `min_iou` (VOC style, all-point interpolation) as a fraction; nan without ground truth.

    `ground_truth` holds one array `[K, 5]` per sample: class, x1, y1, x2, y2. Every class
    that has ground truth counts (one with no detection has AP 0); detections of classes
    absent from the ground truth are ignored, as in VOC and COCO.
    """
    truth = [np.asarray(g, dtype=np.float64).reshape(-1, 5) for g in ground_truth]
    per_class: dict[int, list] = {}  # class -> [(score, is true positive)]
    for (boxes, scores, classes), gt in zip(detections, truth):
        gt_classes = gt[:, 0].astype(np.int64)
        iou = box_iou(boxes, gt[:, 1:]) if len(gt) else np.zeros((len(boxes), 0))
        iou[classes[:, None] != gt_classes[None, :]] = -1.0
        taken = np.zeros(len(gt), dtype=bool)
        # Within a sample, higher scores claim ground truth first; samples are independent,
        # so this is the order VOC's global ranking would give them too.
        for i in np.argsort(-scores, kind="stable"):
            j = int(iou[i].argmax()) if len(gt) else -1
            # VOC: the best-overlapping box decides; if it is already taken this is a duplicate.
            hit = j >= 0 and iou[i, j] >= min_iou and not taken[j]
            if hit:
                taken[j] = True
            per_class.setdefault(int(classes[i]), []).append((scores[i], hit))
    counts: dict[int, int] = {}
    for gt in truth:
        for c in gt[:, 0].astype(np.int64):
            counts[int(c)] = counts.get(int(c), 0) + 1
    if not counts:
        return float("nan")
    aps = []
    for c, n_truth in counts.items():
        ranked = sorted(per_class.get(c, []), key=lambda d: -d[0])
        hits = np.asarray([h for _, h in ranked], dtype=bool)
        tp = np.cumsum(hits)
        fp = np.cumsum(~hits)
        recall = np.concatenate([[0.0], tp / n_truth, [1.0]])
        precision = np.concatenate([[0.0], tp / np.maximum(tp + fp, 1), [0.0]])
        # All-point interpolation: precision at recall r is the best precision at any recall >= r.
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        steps = np.nonzero(recall[1:] != recall[:-1])[0]
        aps.append(float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1])))
    return float(np.mean(aps))
