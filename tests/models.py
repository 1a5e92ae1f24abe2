"""Models and data sets the tests build at test time.

* `tiny_onnx`: a hand-written ONNX graph (Conv [+BatchNormalization] + Relu +
  GlobalAveragePool + Flatten + Gemm), optionally with a dynamic batch dimension "N".
* `digits16`: scikit-learn's digits upsampled to 16x16, split train / calibration / eval.
* `UnseenCNN` / `train_and_export_unseen`: a torch CNN that is *not* the shipped example
  (conv/BN/ReLU, a two-branch concat, a residual block, maxpool, dropout; > 100k
  parameters), trained for a few seconds and exported to ONNX with the dynamo exporter.

torch is imported only inside the functions that need it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TINY_CHANNELS = 3
TINY_SIZE = 8
TINY_FILTERS = 16
TINY_CLASSES = 10


def tiny_onnx(path: Path, *, batch: int | str = 1, bn: bool = False, seed: int = 0, opset: int = 17) -> Path:
    """Write Conv(3->16, 3x3) [+BN] + Relu + GlobalAveragePool + Flatten + Gemm(16->10).

    `batch` is an int for a static batch or a string (e.g. "N") for a dynamic one.
    """
    rng = np.random.default_rng(seed)
    c, f, k = TINY_CHANNELS, TINY_FILTERS, TINY_CLASSES
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (f, c, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (f,)).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(0, 0.3, (k, f)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (k,)).astype(np.float32), "fc_b"),
    ]
    nodes = [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv")]
    act_in = "conv"
    if bn:
        inits += [
            numpy_helper.from_array(rng.uniform(0.5, 1.5, (f,)).astype(np.float32), "bn_scale"),
            numpy_helper.from_array(rng.normal(0, 0.2, (f,)).astype(np.float32), "bn_bias"),
            numpy_helper.from_array(rng.normal(0, 0.2, (f,)).astype(np.float32), "bn_mean"),
            numpy_helper.from_array(rng.uniform(0.5, 2.0, (f,)).astype(np.float32), "bn_var"),
        ]
        nodes.append(helper.make_node("BatchNormalization", ["conv", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
                                      ["bn"], epsilon=1e-5, name="bn"))
        act_in = "bn"
    nodes += [
        helper.make_node("Relu", [act_in], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, c, TINY_SIZE, TINY_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, k])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgepack-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def tiny_inputs(n: int, seed: int = 1) -> np.ndarray:
    """Float32 samples shaped like the tiny model's input (without batch)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (n, TINY_CHANNELS, TINY_SIZE, TINY_SIZE)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# The "unseen" model: digits at 16x16 and a CNN of a different architecture.

N_CALIB = 200
N_EVAL = 400


def digits16():
    """sklearn digits, bilinearly upsampled to 16x16, in [0, 1], NCHW float32.

    Returns ((x_train, y_train), (x_calib, y_calib), (x_eval, y_eval)); splits are disjoint,
    stratified and seeded.
    """
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    imgs = (d.images / 16.0).astype(np.float32)
    up = np.stack([np.asarray(Image.fromarray(im, mode="F").resize((16, 16), Image.BILINEAR)) for im in imgs])
    x = np.clip(up, 0.0, 1.0)[:, None].astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_ho, y_tr, y_ho = train_test_split(x, y, test_size=N_CALIB + N_EVAL, stratify=y, random_state=1)
    x_ca, x_ev, y_ca, y_ev = train_test_split(x_ho, y_ho, train_size=N_CALIB, stratify=y_ho, random_state=1)
    return (x_tr, y_tr), (x_ca, y_ca), (x_ev, y_ev)


def _unseen_cnn_class():
    import torch
    from torch import nn

    def cbr(cin, cout, k=3, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU())

    class UnseenCNN(nn.Module):
        """16x16x1 -> stem 24 -> concat(3x3 branch 24, 1x1 branch 24) = 48 -> maxpool 8x8
        -> residual block 48 -> conv 96 stride 2 (4x4) -> conv 128 -> GAP -> dropout -> fc 10."""

        def __init__(self):
            super().__init__()
            self.stem = cbr(1, 24)
            self.branch3 = cbr(24, 24, 3)
            self.branch1 = cbr(24, 24, 1)
            self.pool = nn.MaxPool2d(2)
            self.res1 = cbr(48, 48)
            self.res2 = nn.Sequential(nn.Conv2d(48, 48, 3, padding=1, bias=False), nn.BatchNorm2d(48))
            self.relu = nn.ReLU()
            self.down = cbr(48, 128, stride=2)
            self.head = cbr(128, 192)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.drop = nn.Dropout(0.2)
            self.fc = nn.Linear(192, 10)

        def forward(self, x):
            x = self.stem(x)
            x = torch.cat([self.branch3(x), self.branch1(x)], dim=1)
            x = self.pool(x)
            x = self.relu(x + self.res2(self.res1(x)))
            x = self.head(self.down(x))
            x = torch.flatten(self.gap(x), 1)
            return self.fc(self.drop(x))

    return UnseenCNN


def train_and_export_unseen(out_path: Path, *, epochs: int = 4, seed: int = 0) -> dict:
    """Train UnseenCNN on digits16's train split, export it (batch 1) to `out_path`.

    Returns {"path", "parameters", "train_acc"}.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # OpenMP with 2 threads on a busy 2-core box is ~20x slower
    (x_tr, y_tr), _, _ = digits16()
    model = _unseen_cnn_class()()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        train_acc = float((model(xt).argmax(1) == yt).float().mean()) * 100
    out_path = Path(out_path)
    example = (torch.zeros(1, 1, 16, 16),)
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(out_path), dynamo=True, external_data=False,
                          input_names=["image"], output_names=["logits"])
    params = sum(p.numel() for p in model.parameters())
    return {"path": out_path, "parameters": params, "train_acc": train_acc}


def export_unseen_in_subprocess(out_path: Path, timeout: float = 300) -> dict:
    """Run `train_and_export_unseen` in a fresh interpreter.

    torch trains several times slower in a process that has already loaded onnxruntime's
    thread pools, and keeping torch out of the test process keeps it honest about what
    edgepack itself imports.
    """
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, __file__, "unseen", str(out_path)], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"training/exporting the unseen CNN failed:\n{proc.stderr[-3000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["path"] = Path(info["path"])
    return info


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:2] == ["unseen"]:
        result = train_and_export_unseen(Path(sys.argv[2]))
        print(json.dumps({**result, "path": str(result["path"])}))
