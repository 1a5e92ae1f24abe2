"""Small models of the families edgepack has to ship, built by the tests themselves, with
data generators that look like what each family sees in use.

* `detector`: a YOLO-style head, image `[1, 3, 64, 64]` -> ONE output `[1, 4 + 3, 256]`
  (boxes cx, cy, w, h in pixels, then sigmoid class scores; anchors on the last axis, as
  YOLOv8 exports). Constructed, not trained: per anchor window it measures the mass,
  centroid and spread of each colour's foreground, so on `detector_data` (coloured
  rectangles on noise) it finds the rectangles; the smallest ones score near its threshold.
  Dynamic batch (`batch`).
* `audio`: a 1-D conv net on raw 16 kHz audio `[1, 1, 16000]` -> 4 class scores (which
  frequency band a tone burst is in), trained for a few seconds.
* `vad`: a voice-activity detector like Silero's: `audio [1, 512]` float, `state [2, 1, 64]`
  float, `sr` int64 scalar -> `prob [1, 1]`, `new_state [2, 1, 64]` (conv front end, 2-layer
  GRU), trained for a few seconds on voiced bursts against noise.
* `encoder`: a 2-layer transformer, int64 `input_ids` + `attention_mask` -> mean-pooled
  `sentence_embedding [B, 32]`. Seeded, untrained. Dynamic batch and sequence length.
* `ocr`: a CTC text recogniser, image `[1, 1, 32, 128]` -> `[1, 32, 1 + 10]` log-softmax
  (blank 0). Constructed: template matching of 10 glyphs, so on `ocr_data` (glyph strings
  on noise) greedy CTC decoding reads the strings, faint glyphs excepted. Dynamic batch (`N`).

Models are torch modules exported with `torch.onnx.export(..., dynamo=True, opset_version=18)`.
`build_all(folder)` builds them all; tests run it in a fresh interpreter
(`build_all_in_subprocess`) because torch trains several times slower in a process that
has loaded onnxruntime, and the test process then never imports torch. The data
generators and decoders below are numpy (and onnxruntime for the VAD's stream) only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

I64 = np.int64

# ---------------------------------------------------------------------------------------
# Detector: coloured rectangles on noise

DET_IMG, DET_WIN, DET_STRIDE, DET_PAD, DET_CLASSES = 64, 24, 4, 10, 3
DET_GRID = (DET_IMG + 2 * DET_PAD - DET_WIN) // DET_STRIDE + 1  # 16 -> 256 anchors
DET_ANCHORS = DET_GRID * DET_GRID
DET_OPTIONS = {"layout": "boxes_first", "anchors_axis": -1, "box_format": "cxcywh", "score_threshold": 0.25,
               "iou_threshold": 0.45}


def detector_data(n: int, seed: int, small: float = 0.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Images `[n, 3, 64, 64]` (background 0.2 with noise; 1-2 rectangles 10-18 px whose
    colour channel is 0.8 brighter; a share `small` of them only 5-8 px, which the detector
    scores near its threshold) and ground truth per image: rows `class, x1, y1, x2, y2`."""
    rng = np.random.default_rng(seed)
    x = (0.2 + rng.normal(0, 0.04, (n, 3, DET_IMG, DET_IMG))).astype(np.float32)
    truth = []
    for i in range(n):
        boxes = []
        k = int(rng.integers(1, 3))
        halves = rng.permutation(2)[:k]  # one rectangle per half (left/right), so windows see one
        for half in halves:
            w, h = (int(v) for v in (rng.integers(5, 9, 2) if rng.random() < small else rng.integers(10, 19, 2)))
            x1 = int(rng.integers(1 + half * 32, 32 + half * 32 - w))
            y1 = int(rng.integers(1, DET_IMG - 1 - h))
            c = int(rng.integers(0, DET_CLASSES))
            x[i, c, y1:y1 + h, x1:x1 + w] += 0.8
            boxes.append([c, x1, y1, x1 + w, y1 + h])
        truth.append(np.asarray(boxes, np.float64))
    return x, truth


def _detector_module():
    import torch
    from torch import nn

    class RectangleDetector(nn.Module):
        """Per colour c: foreground f_c = relu(x_c - (x_other1 + x_other2) / 2 - 0.3) (0.5 on
        a rectangle, 0 on background). Per 24x24 anchor window (stride 4): the rectangle's
        centroid and spread give the box (w = sqrt(12 var) for a uniform rectangle); the
        class score rises with the colour's mass and falls with mass on the window's rim,
        so only windows holding a whole rectangle score."""

        def __init__(self):
            super().__init__()
            self.fg = nn.Conv2d(3, 3, 1)
            eye = torch.eye(3)
            self.fg.weight.data = (1.5 * eye - 0.5).reshape(3, 3, 1, 1)
            self.fg.bias.data = torch.full((3,), -0.3)
            k = dict(kernel_size=DET_WIN, stride=DET_STRIDE, padding=DET_PAD, bias=False)
            ramp = torch.arange(DET_WIN, dtype=torch.float32) - (DET_WIN - 1) / 2
            ones = torch.ones(DET_WIN, DET_WIN)
            rim = ones.clone()
            rim[2:-2, 2:-2] = 0
            self.mass_c = nn.Conv2d(3, 3, groups=3, **k)
            self.mass_c.weight.data = ones.expand(3, 1, DET_WIN, DET_WIN).clone()
            rows, cols = ramp[None, :].expand(DET_WIN, DET_WIN), ramp[:, None].expand(DET_WIN, DET_WIN)  # x, y offsets
            kernels = {"m": ones, "sx": rows, "sy": cols, "sxx": rows**2, "syy": cols**2, "rim": rim}
            self.moments = nn.ModuleDict({name: nn.Conv2d(3, 1, **k) for name in kernels})
            for name, kern in kernels.items():
                self.moments[name].weight.data = kern.expand(1, 3, DET_WIN, DET_WIN).clone()
            centres = torch.arange(DET_GRID, dtype=torch.float32) * DET_STRIDE - DET_PAD + (DET_WIN - 1) / 2 + 0.5
            self.register_buffer("cx", centres[None, :].expand(DET_GRID, DET_GRID).reshape(1, 1, -1).clone())
            self.register_buffer("cy", centres[:, None].expand(DET_GRID, DET_GRID).reshape(1, 1, -1).clone())

        def forward(self, image):
            f = torch.relu(self.fg(image))
            s = {name: conv(f).flatten(2) for name, conv in self.moments.items()}
            m = s["m"] + 1e-2
            dx, dy = s["sx"] / m, s["sy"] / m
            w = torch.sqrt(12 * torch.relu(s["sxx"] / m - dx * dx) + 1e-4)
            h = torch.sqrt(12 * torch.relu(s["syy"] / m - dy * dy) + 1e-4)
            scores = torch.sigmoid(0.1 * (self.mass_c(f).flatten(2) - 30.0) - 0.6 * s["rim"])
            return torch.cat([self.cx + dx, self.cy + dy, w, h, scores], dim=1)

    return RectangleDetector().eval()


def decode_detections(head: np.ndarray, score_threshold: float = 0.25, iou_threshold: float = 0.45) -> list[tuple]:
    """An independent decoder for `[S, 4 + C, N]` heads (plain numpy): per sample
    (boxes x1y1x2y2 [K, 4], scores [K], classes [K]) after class-aware greedy NMS."""
    out = []
    for h in np.asarray(head, np.float64):
        h = h.T  # [N, 4 + C]
        cls = h[:, 4:].argmax(1)
        score = h[np.arange(len(h)), 4 + cls]
        keep = np.nonzero(score > score_threshold)[0]
        keep = keep[np.argsort(-score[keep], kind="stable")]
        half = h[:, 2:4] / 2
        boxes = np.concatenate([h[:, :2] - half, h[:, :2] + half], 1)
        chosen: list[int] = []
        for i in keep:
            if all(cls[j] != cls[i] or iou(boxes[i], boxes[j]) <= iou_threshold for j in chosen):
                chosen.append(int(i))
        out.append((boxes[chosen], score[chosen], cls[chosen]))
    return out


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_count(found: list[tuple], reference: list, min_iou: float = 0.5) -> tuple[int, int, int]:
    """(matched, len(found), len(reference)) pooled over samples: greedy one-to-one matching of
    same-class boxes at IoU >= min_iou. `reference` holds detections or `[K, 5]` truth rows."""
    matched = n_found = n_ref = 0
    for (boxes, scores, classes), ref in zip(found, reference):
        if isinstance(ref, tuple):
            rb, rc = ref[0], ref[2]
        else:
            rb, rc = ref[:, 1:], ref[:, 0].astype(int)
        taken = set()
        for i in np.argsort(-scores, kind="stable"):
            best, best_j = min_iou, None
            for j in range(len(rb)):
                if j not in taken and rc[j] == classes[i] and iou(boxes[i], rb[j]) >= best:
                    best, best_j = iou(boxes[i], rb[j]), j
            if best_j is not None:
                taken.add(best_j)
                matched += 1
        n_found, n_ref = n_found + len(boxes), n_ref + len(rb)
    return matched, n_found, n_ref


def truth_labels(truth: list[np.ndarray], k: int = 2) -> np.ndarray:
    """Ground truth as edgepack reads detection labels: `[n, k, 5]`, padded with class -1 rows."""
    y = np.full((len(truth), k, 5), -1, np.float32)
    for i, t in enumerate(truth):
        y[i, : len(t)] = t
    return y


def average_precision(found: list[tuple], truth: list[np.ndarray], min_iou: float = 0.5) -> float:
    """mAP@min_iou in percent, VOC all-point, computed independently: per class, detections of
    all samples ranked by score, each a hit if it takes a not yet taken same-class truth box."""
    aps = []
    for c in sorted({int(k) for t in truth for k in t[:, 0]}):
        ranked, n_truth = [], 0
        for (boxes, scores, classes), t in zip(found, truth):
            gt = t[t[:, 0] == c, 1:]
            n_truth += len(gt)
            taken = set()
            for i in np.argsort(-scores, kind="stable"):
                if classes[i] != c:
                    continue
                ious = [iou(boxes[i], g) for g in gt]
                j = int(np.argmax(ious)) if ious else -1
                hit = j >= 0 and ious[j] >= min_iou and j not in taken
                taken |= {j} if hit else set()
                ranked.append((scores[i], hit))
        ranked.sort(key=lambda r: -r[0])
        hits = np.asarray([h for _, h in ranked], bool)
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        recall = np.concatenate([[0], tp / n_truth, [1]])
        precision = np.concatenate([[0], tp / np.maximum(tp + fp, 1), [0]])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        steps = np.nonzero(recall[1:] != recall[:-1])[0]
        aps.append(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))
    return 100.0 * float(np.mean(aps))


# ---------------------------------------------------------------------------------------
# Audio classifier: tone bursts in four frequency bands

AUDIO_SR, AUDIO_LEN = 16000, 16000
AUDIO_BANDS = ((200, 400), (600, 1000), (1500, 2500), (3500, 5000))


def audio_data(n: int, seed: int, quiet: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """`[n, 1, 16000]` float32 clips (a tone burst with a harmonic, random onset and length,
    in noise; a share `quiet` of them barely above the noise) and their class: which of
    AUDIO_BANDS the tone is in."""
    rng = np.random.default_rng(seed)
    t = np.arange(AUDIO_LEN) / AUDIO_SR
    x = np.empty((n, 1, AUDIO_LEN), np.float32)
    y = rng.integers(0, len(AUDIO_BANDS), n).astype(I64)
    for i in range(n):
        f = rng.uniform(*AUDIO_BANDS[y[i]])
        tone = np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) + 0.3 * np.sin(4 * np.pi * f * t)
        start = int(rng.integers(0, AUDIO_LEN // 2))
        length = int(rng.integers(AUDIO_LEN // 4, AUDIO_LEN - start))
        env = np.zeros(AUDIO_LEN)
        env[start:start + length] = np.hanning(length)
        level = rng.uniform(0.01, 0.03) if rng.random() < quiet else rng.uniform(0.1, 0.5)
        x[i, 0] = level * tone * env + rng.normal(0, rng.uniform(0.01, 0.04), AUDIO_LEN)
    return x, y


def _audio_module():
    from torch import nn

    return nn.Sequential(
        nn.Conv1d(1, 16, 80, stride=16), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(4),
        nn.Conv1d(16, 32, 5, stride=2), nn.BatchNorm1d(32), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, len(AUDIO_BANDS)),
    )


# ---------------------------------------------------------------------------------------
# Voice-activity detector with recurrent state

VAD_FRAME, VAD_HIDDEN, VAD_LAYERS = 512, 64, 2


def vad_stream(n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 16 kHz stream cut in `[n_frames, 512]` frames, and per frame 1 where it is voiced:
    segments of voiced sound (a 100-250 Hz fundamental with decaying harmonics, amplitude
    modulated) alternate with silence, under noise whose level drifts."""
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    phase = 0.0
    while len(frames) < n_frames:
        voiced = bool(rng.random() < 0.5)
        for _ in range(int(rng.integers(4, 16))):
            t = np.arange(VAD_FRAME) / AUDIO_SR
            noise = rng.normal(0, rng.uniform(0.005, 0.05), VAD_FRAME)
            if voiced:
                f0 = rng.uniform(100, 250)
                sig = sum(np.sin(2 * np.pi * k * f0 * t + phase * k) / k for k in range(1, 6))
                phase += 2 * np.pi * f0 * VAD_FRAME / AUDIO_SR
                noise = noise + rng.uniform(0.05, 0.3) * sig
            frames.append(noise.astype(np.float32))
            labels.append(int(voiced))
    return np.stack(frames[:n_frames]), np.asarray(labels[:n_frames], I64)


def _vad_module():
    import torch
    from torch import nn

    class VAD(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Conv1d(1, 16, 64, stride=16)
            self.enc2 = nn.Conv1d(16, 24, 3, stride=2)
            self.gru = nn.GRU(24, VAD_HIDDEN, num_layers=VAD_LAYERS, batch_first=True)
            self.out = nn.Linear(VAD_HIDDEN, 1)

        def features(self, audio, sr):
            # sr scales the frame as a 16 kHz model would see it (1 at 16 kHz)
            x = (audio * (sr.to(torch.float32) / 16000.0)).unsqueeze(1)
            x = torch.relu(self.enc2(torch.relu(self.enc1(x))))
            return torch.log1p(x.mean(-1) * 10)  # [B, 24]

        def forward(self, audio, state, sr):
            y, new_state = self.gru(self.features(audio, sr).unsqueeze(1), state)
            return torch.sigmoid(self.out(y[:, -1])), new_state

    return VAD()


def vad_calls(onnx_path: Path, n_frames: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Model calls for the VAD as an application makes them: frames of one stream in order,
    each with the state the float model returned for the frame before (zeros first), and
    `sr` 16000. Returns ({audio [n, 1, 512], state [n, 2, 1, 64], sr [n]}, voiced labels)."""
    import onnxruntime as ort

    frames, labels = vad_stream(n_frames, seed)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    state = np.zeros((VAD_LAYERS, 1, VAD_HIDDEN), np.float32)
    states = []
    for f in frames:
        states.append(state)
        _, state = sess.run(None, {"audio": f[None], "state": state, "sr": np.array(AUDIO_SR, I64)})
    return {"audio": frames[:, None], "state": np.stack(states), "sr": np.full(n_frames, AUDIO_SR, I64)}, labels


# ---------------------------------------------------------------------------------------
# Sentence-embedding transformer

ENC_VOCAB, ENC_SEQ, ENC_DIM = 100, 16, 32


def encoder_data(n: int, seed: int, seq: int = ENC_SEQ) -> dict[str, np.ndarray]:
    """`input_ids` / `attention_mask` `[n, seq]` int64: [CLS]=1 ... [SEP]=2 then padding 0,
    sentences of 4..seq tokens (some padded, some not), words from a Zipf-like vocabulary."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, seq), I64)
    mask = np.zeros((n, seq), I64)
    p = 1.0 / np.arange(1, ENC_VOCAB - 2)
    p /= p.sum()
    for i in range(n):
        length = int(rng.integers(4, seq + 1))
        ids[i, :length] = np.concatenate([[1], rng.choice(np.arange(3, ENC_VOCAB), length - 2, p=p), [2]])
        mask[i, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _encoder_module(gelu: tuple[str, ...] = ("none", "none")):
    """Two post-LN encoder layers; `gelu`: each layer's GELU approximation ("none" is Erf, "tanh")."""
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self, approximate: str):
            super().__init__()
            self.approximate = approximate
            self.qkv, self.o = nn.Linear(ENC_DIM, 3 * ENC_DIM), nn.Linear(ENC_DIM, ENC_DIM)
            self.n1, self.n2 = nn.LayerNorm(ENC_DIM), nn.LayerNorm(ENC_DIM)
            self.f1, self.f2 = nn.Linear(ENC_DIM, 4 * ENC_DIM), nn.Linear(4 * ENC_DIM, ENC_DIM)

        def forward(self, x, bias):
            b, t, d = x.shape
            q, k, v = (y.reshape(b, t, 2, d // 2).transpose(1, 2) for y in self.qkv(x).split(d, -1))
            a = (q @ k.transpose(-1, -2) / (d // 2) ** 0.5 + bias).softmax(-1)
            x = self.n1(x + self.o((a @ v).transpose(1, 2).reshape(b, t, d)))
            return self.n2(x + self.f2(torch.nn.functional.gelu(self.f1(x), approximate=self.approximate)))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(ENC_VOCAB, ENC_DIM)
            self.pos = nn.Parameter(torch.randn(1, 64, ENC_DIM) * 0.1)
            self.layers = nn.ModuleList([Layer(a) for a in gelu])

        def forward(self, input_ids, attention_mask):
            x = self.emb(input_ids) + self.pos[:, : input_ids.shape[1]]
            m = attention_mask.to(torch.float32)
            bias = ((1.0 - m) * -1e4)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            m = m.unsqueeze(-1)
            return (x * m).sum(1) / m.sum(1).clamp(min=1e-9)

    torch.manual_seed(0)
    return Encoder().eval()


def encoder_factory():
    """The encoder as a `[model] torch = "tests/families.py:encoder_factory"` factory."""
    return _encoder_module()


# ---------------------------------------------------------------------------------------
# OCR: glyph strings, CTC head

OCR_H, OCR_W, OCR_GLYPH_W, OCR_STRIDE, OCR_CHARS = 32, 128, 8, 4, 10
OCR_T = OCR_W // OCR_STRIDE  # 32 time steps
OCR_BLANK = 0


def ocr_glyphs() -> np.ndarray:
    """The 10 glyphs `[10, 32, 8]` of 0/1 pixels (seeded), half of each glyph's pixels set."""
    rng = np.random.default_rng(1234)
    g = np.zeros((OCR_CHARS, OCR_H * OCR_GLYPH_W), np.float32)
    for k in range(OCR_CHARS):
        g[k, rng.permutation(OCR_H * OCR_GLYPH_W)[: OCR_H * OCR_GLYPH_W // 2]] = 1
    return g.reshape(OCR_CHARS, OCR_H, OCR_GLYPH_W)


def ocr_data(n: int, seed: int, faint: float = 0.0) -> tuple[np.ndarray, list[list[int]]]:
    """Images `[n, 1, 32, 128]` of 3-7 glyphs (ink 0.6-1.0, a share `faint` of glyphs only
    0.4-0.6, near what the recogniser reads; gaps of 4-8 px, left margin 2-14 px) on paper
    noise, and each image's text as token ids 1..10 (0 is the CTC blank)."""
    rng = np.random.default_rng(seed)
    glyphs = ocr_glyphs()
    x = rng.normal(0.05, 0.05, (n, 1, OCR_H, OCR_W)).astype(np.float32)
    texts = []
    for i in range(n):
        pos, text = 2 + 4 * int(rng.integers(0, 4)), []  # glyphs start where a window does
        for _ in range(int(rng.integers(3, 8))):
            if pos + OCR_GLYPH_W > OCR_W:
                break
            k = int(rng.integers(0, OCR_CHARS))
            ink = rng.uniform(0.4, 0.6) if rng.random() < faint else rng.uniform(0.6, 1.0)
            x[i, 0, :, pos:pos + OCR_GLYPH_W] += ink * glyphs[k]
            text.append(k + 1)
            pos += OCR_GLYPH_W + 4 * int(rng.integers(1, 3))
        texts.append(text)
    return x, texts


def _ocr_module():
    import torch
    from torch import nn

    class GlyphCTC(nn.Module):
        """Per time step (an 8-px window every 4 px) the correlation of the window with each
        glyph's +-1 template, centred by the window's ink, gives that glyph's logit; the
        blank's logit is fixed. An aligned glyph scores ~+6, anything else below the blank."""

        def __init__(self):
            super().__init__()
            t = torch.from_numpy(ocr_glyphs() * 2 - 1)  # +-1 templates
            self.match = nn.Conv2d(1, OCR_CHARS, (OCR_H, OCR_GLYPH_W), stride=(1, OCR_STRIDE), padding=(0, 2))
            self.match.weight.data = t[:, None] / 12.0
            self.match.bias.data = torch.full((OCR_CHARS,), -5.0)
            self.register_buffer("blank", torch.zeros(1, 1, 1, OCR_T))

        def forward(self, image):
            logits = self.match(image)  # [B, 10, 1, T]
            blank = self.blank.expand(image.shape[0], 1, 1, OCR_T)
            logits = torch.cat([blank, logits], dim=1).squeeze(2).transpose(1, 2)  # [B, T, 11]
            return torch.log_softmax(logits, dim=-1)

    return GlyphCTC().eval()


def text_labels(texts: list[list[int]], length: int = 8) -> np.ndarray:
    """Texts as edgepack reads sequence labels: `[n, length]` token ids padded with -1."""
    y = np.full((len(texts), length), -1, I64)
    for i, t in enumerate(texts):
        y[i, : len(t)] = t
    return y


def ctc_greedy(logp: np.ndarray, blank: int = OCR_BLANK) -> list[list[int]]:
    """Independent greedy CTC decoding of `[S, T, C]`: argmax, collapse repeats, drop blanks."""
    out = []
    for row in np.asarray(logp).argmax(-1):
        seq, prev = [], None
        for k in row.tolist():
            if k != prev and k != blank:
                seq.append(k)
            prev = k
        out.append(seq)
    return out


def edit_distance(a, b) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


# ---------------------------------------------------------------------------------------
# Training and export (torch; run in a fresh interpreter by build_all_in_subprocess)


def _export(module, example: tuple, path: Path, names: list[str], outputs: list[str], dynamic=None) -> Path:
    import contextlib
    import io
    import warnings

    import torch

    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with warnings.catch_warnings(), quiet[0], quiet[1]:
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), dynamo=True, opset_version=18, external_data=False,
                          input_names=names, output_names=outputs, dynamic_shapes=dynamic)
    return Path(path)


def _train(module, batches, loss_fn, steps: int, lr: float = 3e-3) -> None:
    import torch

    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(module, *batches(step))
        loss.backward()
        opt.step()
    module.eval()


def build_detector(folder: Path) -> dict:
    import torch

    m = _detector_module()
    # batch 2 in the example: torch.export specialises a size-1 dim and refuses to make it dynamic
    path = _export(m, (torch.zeros(2, 3, DET_IMG, DET_IMG),), folder / "detector.onnx", ["image"], ["head"],
                   dynamic={"image": {0: "batch"}})
    return {"path": str(path)}


def build_audio(folder: Path, seed: int = 0) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    m = _audio_module()
    x, y = audio_data(384, seed=100)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def batch(step):
        idx = torch.from_numpy(np.random.default_rng(step).integers(0, len(xt), 32))
        return xt[idx], yt[idx]

    _train(m, batch, lambda mod, a, b: F.cross_entropy(mod(a), b), steps=150)
    xv, yv = audio_data(200, seed=101)
    with torch.no_grad():
        acc = float((m(torch.from_numpy(xv)).argmax(1) == torch.from_numpy(yv)).float().mean()) * 100
    path = _export(m, (torch.zeros(1, 1, AUDIO_LEN),), folder / "audio.onnx", ["waveform"], ["logits"])
    return {"path": str(path), "heldout_top1": acc}


def build_vad(folder: Path, seed: int = 0) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    m = _vad_module()
    frames, labels = vad_stream(4096, seed=200)
    seq = 32
    fx = torch.from_numpy(frames[: len(frames) // seq * seq].reshape(-1, seq, VAD_FRAME))
    fy = torch.from_numpy(labels[: len(labels) // seq * seq].reshape(-1, seq)).float()
    sr = torch.tensor(AUDIO_SR)

    def batch(step):
        idx = torch.from_numpy(np.random.default_rng(step).integers(0, len(fx), 16))
        return fx[idx], fy[idx]

    def loss(mod, a, b):  # whole sequences through the GRU: the state carries context
        feats = mod.features(a.reshape(-1, VAD_FRAME), sr).reshape(a.shape[0], seq, -1)
        out, _ = mod.gru(feats)
        return F.binary_cross_entropy_with_logits(mod.out(out).squeeze(-1), b)

    _train(m, batch, loss, steps=120, lr=5e-3)
    m.eval()
    vf, vl = vad_stream(400, seed=201)
    with torch.no_grad():
        state, probs = torch.zeros(VAD_LAYERS, 1, VAD_HIDDEN), []
        for f in torch.from_numpy(vf):
            p, state = m(f[None], state, sr)
            probs.append(float(p))
    acc = float(np.mean((np.asarray(probs) > 0.5) == vl)) * 100
    example = (torch.zeros(1, VAD_FRAME), torch.zeros(VAD_LAYERS, 1, VAD_HIDDEN), torch.tensor(AUDIO_SR))
    path = _export(m, example, folder / "vad.onnx", ["audio", "state", "sr"], ["prob", "new_state"])
    return {"path": str(path), "heldout_accuracy": acc}


def build_encoder(folder: Path) -> dict:
    import torch

    m = _encoder_module()
    feeds = encoder_data(2, seed=0)
    example = tuple(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))
    # The output must not be called "embedding": torch.onnx gives that name to the Embedding's output too.
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    path = _export(m, example, folder / "encoder.onnx", ["input_ids", "attention_mask"], ["sentence_embedding"],
                   dynamic=dyn)
    return {"path": str(path)}


def build_ocr(folder: Path) -> dict:
    import torch

    path = _export(_ocr_module(), (torch.zeros(2, 1, OCR_H, OCR_W),), folder / "ocr.onnx", ["image"], ["log_probs"],
                   dynamic={"image": {0: "N"}})
    return {"path": str(path)}


BUILDERS = {"detector": build_detector, "audio": build_audio, "vad": build_vad, "encoder": build_encoder,
            "ocr": build_ocr}


def build_all(folder: Path, names=None) -> dict:
    """Build the families named (default all) into `folder`; {name: {"path", "seconds", ...}}."""
    import torch

    torch.set_num_threads(1)  # OpenMP with 2 threads on a busy 2-core box is many times slower
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names or BUILDERS:
        t0 = time.perf_counter()
        out[name] = {**BUILDERS[name](folder), "seconds": round(time.perf_counter() - t0, 2)}
    return out


def build_all_in_subprocess(folder: Path, names=None, timeout: float = 600) -> dict:
    """`build_all` in a fresh interpreter (see the module docstring)."""
    proc = subprocess.run([sys.executable, __file__, str(folder), *(names or [])], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"building the model families failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(build_all(Path(sys.argv[1]), sys.argv[2:] or None)))
