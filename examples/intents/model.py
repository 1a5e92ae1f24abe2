"""Small transformer encoder for short voice-assistant commands (embedded NLP example).

Classifies a command such as "hey pi set a timer for ten minutes" into one of the
ten intents in ``INTENTS``. The model covers the graph patterns of a real text
encoder: int64 token ids and attention mask as two inputs, an embedding lookup
(Gather), a learned position embedding, multi-head self-attention written with
plain ops (MatMul, Softmax, an additive ``(1 - mask) * -1e4`` mask bias),
LayerNorm, exact GELU (Erf) and masked mean pooling.

Inputs:  ``input_ids``      int64 [B, 32]  token ids from ``encode()`` ([PAD]=0, [UNK]=1, [CLS]=2)
         ``attention_mask`` int64 [B, 32]  1 for real tokens (including [CLS]), 0 for padding
Output:  logits float32 [B, 10], class order as in ``INTENTS``.

``build()`` returns the trained model in eval mode, loading the weights from
``intents_transformer.pt`` next to this file. ``encode(texts)`` tokenises new
sentences exactly as the training data was tokenised, with the vocabulary in
``calibration/intents/vocab.txt`` (regenerate both with
``python scripts/make_intents_example.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS = Path(__file__).with_name("intents_transformer.pt")
VOCAB = Path(__file__).resolve().parents[2] / "calibration" / "intents" / "vocab.txt"

# Class index -> intent name (the order of the logits and of the labels ``y``).
INTENTS = (
    "set_timer",
    "set_alarm",
    "get_weather",
    "get_time",
    "play_music",
    "pause_music",
    "lights_on",
    "lights_off",
    "volume_up",
    "volume_down",
)

SEQ_LEN = 32
PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
SPECIALS = (PAD, UNK, CLS)  # ids 0, 1, 2
PAD_ID, UNK_ID, CLS_ID = 0, 1, 2

D_MODEL, N_HEADS, D_FF, N_LAYERS = 64, 4, 128, 2

_WORD = re.compile(r"[a-z0-9]+")


# --------------------------------------------------------------------------- tokenizer


def tokenize(text: str) -> list[str]:
    """Lower-case words: runs of a-z / 0-9; everything else separates ("what's" -> what, s)."""
    return _WORD.findall(text.lower())


def load_vocab(path: Path | str = VOCAB) -> dict[str, int]:
    """vocab.txt (one token per line, line number = id) -> {token: id}."""
    tokens = Path(path).read_text(encoding="utf-8").splitlines()
    if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
        raise ValueError(f"{path}: the first lines must be {SPECIALS}")
    return {tok: i for i, tok in enumerate(tokens)}


def encode(texts: Iterable[str], vocab: dict[str, int] | Path | str | None = None,
           seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """Sentences -> {"input_ids", "attention_mask"}, both int64 [N, seq_len].

    Each row is [CLS] followed by the sentence's word ids (unknown words -> [UNK]),
    truncated to ``seq_len`` and padded with [PAD]; the mask is 1 on [CLS] and the words.
    """
    if not isinstance(vocab, dict):
        vocab = load_vocab(VOCAB if vocab is None else vocab)
    texts = list(texts)
    ids = np.full((len(texts), seq_len), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(texts), seq_len), dtype=np.int64)
    for row, text in enumerate(texts):
        toks = [CLS_ID] + [vocab.get(w, UNK_ID) for w in tokenize(text)]
        toks = toks[:seq_len]
        ids[row, : len(toks)] = toks
        mask[row, : len(toks)] = 1
    return {"input_ids": ids, "attention_mask": mask}


# --------------------------------------------------------------------------- model


class SelfAttention(nn.Module):
    """Multi-head self-attention from plain ops: Linear q/k/v, scaled QK^T + mask bias, softmax, AV."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.n_heads, self.d_head).transpose(1, 2)  # [B, H, T, Dh]

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d_head)) + bias
        attn = self.drop(torch.softmax(scores, dim=-1))
        y = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
        return self.out(y)


class EncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block: x + Attn(LN(x)), then x + FF(LN(x)) with GELU."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), bias))
        return x + self.drop(self.ff(self.ln2(x)))


class IntentTransformer(nn.Module):
    """Token + position embedding -> 2 encoder layers -> LayerNorm -> masked mean pool -> Linear."""

    def __init__(self, vocab_size: int, num_classes: int = len(INTENTS), seq_len: int = SEQ_LEN,
                 d_model: int = D_MODEL, n_heads: int = N_HEADS, d_ff: int = D_FF,
                 n_layers: int = N_LAYERS, dropout: float = 0.1) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Parameter(torch.zeros(1, seq_len, d_model))
        nn.init.normal_(self.pos_emb, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.to(torch.float32)  # [B, T]
        bias = ((1.0 - m) * -1e4)[:, None, None, :]  # [B, 1, 1, T]: padded keys get -1e4
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb)
        for layer in self.layers:
            x = layer(x, bias)
        x = self.ln(x)
        m = m.unsqueeze(-1)  # [B, T, 1]
        pooled = (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


def build() -> IntentTransformer:
    """Construct IntentTransformer sized from the shipped weights, load them (CPU), return it in eval mode."""
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    model = IntentTransformer(vocab_size=state["tok_emb.weight"].shape[0], num_classes=state["head.weight"].shape[0],
                              seq_len=state["pos_emb"].shape[1])
    model.load_state_dict(state)
    return model.eval()


def predict(texts: Sequence[str]) -> list[str]:
    """Convenience: intent names for a few sentences, with the shipped model and vocabulary."""
    model, enc = build(), encode(texts)
    with torch.no_grad():
        logits = model(torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"]))
    return [INTENTS[i] for i in logits.argmax(dim=1).tolist()]
