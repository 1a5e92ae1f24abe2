"""Regenerate the embedded digits example: trained weights and calibration/eval data.

This script builds everything the ``examples/digits`` example needs, from data
that ships inside scikit-learn (no download):

* ``examples/digits/digits_cnn.pt``     trained ``DigitsCNN`` state_dict
* ``calibration/digits/calib.npz``      200 calibration samples (x, y)
* ``calibration/digits/eval.npz``       held-out evaluation samples (x, y)
* ``calibration/digits/PROVENANCE.md``  data origin, preprocessing, splits, seeds,
                                        float accuracy and sha256 of each file

The model architecture lives in ``examples/digits/model.py`` and is imported
from there by path, so there is a single definition.

Everything is seeded and run single-threaded with deterministic algorithms, so
re-running on the same software stack reproduces the same files byte for byte.

Usage::

    python scripts/make_digits_example.py [--out-root DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import sklearn
import torch
from example_tools import load_module, save_npz, sha256
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_PY = REPO_ROOT / "examples" / "digits" / "model.py"

SEED = 0  # torch seed, numpy generator seed and sklearn random_state
N_HOLDOUT = 600  # samples kept out of training (calibration + evaluation)
N_CALIB = 200  # calibration samples taken from the holdout; the rest is eval
EPOCHS = 40
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4

# Fixed timestamp for zip members so the .npz files are byte-reproducible
# (np.savez stamps members with the current time).




def load_data() -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits -> x float32 [N,1,8,8] in [0,1] (raw/16), y int64 [N]."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = digits.target.astype(np.int64)
    return np.ascontiguousarray(x), y


def split(x: np.ndarray, y: np.ndarray):
    """Stratified train / calibration / eval split; calibration and eval are disjoint."""
    x_tr, x_ho, y_tr, y_ho = train_test_split(
        x, y, test_size=N_HOLDOUT, stratify=y, random_state=SEED
    )
    x_cal, x_ev, y_cal, y_ev = train_test_split(
        x_ho, y_ho, train_size=N_CALIB, stratify=y_ho, random_state=SEED
    )
    return (x_tr, y_tr), (x_cal, y_cal), (x_ev, y_ev)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    """Adam + cosine LR schedule, mini-batches shuffled by a seeded numpy generator."""
    rng = np.random.default_rng(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = -(-len(x) // BATCH_SIZE)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(EPOCHS):
        order = torch.from_numpy(rng.permutation(len(x)))
        for i in range(0, len(x), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@torch.no_grad()
def n_correct(model: nn.Module, x: np.ndarray, y: np.ndarray) -> int:
    """Number of samples whose top-1 prediction matches the label."""
    pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return int((pred == y).sum())






def write_provenance(path: Path, *, out_root: Path, files: list[Path], sizes: dict,
                     correct: int) -> None:
    """Write PROVENANCE.md: data origin, preprocessing, splits, seeds, accuracy, hashes."""
    acc = correct / sizes["eval"]
    hashes = "\n".join(
        f"| `{p.relative_to(out_root).as_posix()}` | {p.stat().st_size} | `{sha256(p)}` |"
        for p in files
    )
    text = f"""# Digits example data: provenance

## Source

scikit-learn's bundled copy of the UCI "Optical Recognition of Handwritten
Digits" data set (test part, 1797 images), loaded with
`sklearn.datasets.load_digits()` (scikit-learn {sklearn.__version__}). The data
ships inside the scikit-learn package; nothing is downloaded. Each image is
8x8, integer pixel values 0..16, labels 0..9.
Original data: E. Alpaydin, C. Kaynak, UCI Machine Learning Repository,
https://archive.ics.uci.edu/dataset/80 (CC BY 4.0).

## Preprocessing

- `x = images.astype(float32) / 16.0`, values in [0, 1], layout NCHW `[N, 1, 8, 8]`, float32.
- `y = target.astype(int64)`, shape `[N]`.
- No normalisation beyond the division by 16, no augmentation.

## Splits (all stratified by label)

| split | samples | how |
|-------|---------|-----|
| train | {sizes['train']} | \
`train_test_split(x, y, test_size={N_HOLDOUT}, stratify=y, random_state={SEED})` -> train part |
| calibration | {sizes['calib']} | holdout part, then \
`train_test_split(x_ho, y_ho, train_size={N_CALIB}, stratify=y_ho, random_state={SEED})` -> first part |
| eval | {sizes['eval']} | the remaining holdout samples (disjoint from calibration and train) |

The training split is used only to train the model; it is not stored here.

## Model and training

`examples/digits/model.py:DigitsCNN`, trained on the train split only:
Adam (lr {LR}, weight decay {WEIGHT_DECAY}), cosine LR schedule, {EPOCHS} epochs,
batch size {BATCH_SIZE}, cross-entropy loss. Seeds: `torch.manual_seed({SEED})`,
mini-batch order from `np.random.default_rng({SEED})`, sklearn
`random_state={SEED}`; `torch.use_deterministic_algorithms(True)`,
`torch.set_num_threads(1)`. Trained with torch {torch.__version__}, numpy {np.__version__}.

Float (PyTorch, fp32) accuracy on the eval split: **{acc * 100:.2f} %**
({correct}/{sizes['eval']}).

## Regenerate

```
python scripts/make_digits_example.py
```

(optionally `--out-root DIR`). Re-running with the same library versions
reproduces the files below byte for byte.

## Files

| file | bytes | sha256 |
|------|-------|--------|
{hashes}
"""
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, default=REPO_ROOT,
                        help="root under which examples/ and calibration/ are written "
                             "(default: repository root)")
    args = parser.parse_args()
    out_root = args.out_root.resolve()

    # Determinism: fixed seeds, deterministic kernels, one thread (reduction
    # order in CPU kernels can depend on the thread count).
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    x, y = load_data()
    (x_tr, y_tr), (x_cal, y_cal), (x_ev, y_ev) = split(x, y)

    model = load_module(MODEL_PY, "digits_example_model").DigitsCNN()
    train(model, x_tr, y_tr)
    correct = n_correct(model, x_ev, y_ev)

    model_dir = out_root / "examples" / "digits"
    data_dir = out_root / "calibration" / "digits"
    model_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)

    weights = model_dir / "digits_cnn.pt"
    calib = data_dir / "calib.npz"
    evals = data_dir / "eval.npz"
    torch.save(model.state_dict(), weights)
    save_npz(calib, x=x_cal, y=y_cal)
    save_npz(evals, x=x_ev, y=y_ev)
    write_provenance(
        data_dir / "PROVENANCE.md", out_root=out_root, files=[weights, calib, evals],
        sizes={"train": len(y_tr), "calib": len(y_cal), "eval": len(y_ev)},
        correct=correct,
    )

    print(f"digits: float eval accuracy {correct / len(y_ev) * 100:.2f}% "
          f"({correct}/{len(y_ev)}; "
          f"train {len(y_tr)}, calib {len(y_cal)}) -> {out_root}")


if __name__ == "__main__":
    main()
