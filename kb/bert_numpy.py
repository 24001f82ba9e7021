"""all-MiniLM-L6-v2's forward pass in NumPy, for embedding one query without importing torch.

sentence-transformers costs about 8 s to import on these machines while a query needs a few
milliseconds of arithmetic. This reads the same safetensors weights and tokenizer.json, runs the
same BERT encoder, mean pooling and normalisation, and matches sentence-transformers to ~1e-6
(tests/test_real_models.py checks it). Ingest keeps torch, which is faster for large batches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's exact GELU, x * Phi(x), with erf from Abramowitz & Stegun 7.1.26 (error < 1.5e-7).
    z = x / np.sqrt(2.0)
    sign = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = sign * (1.0 - poly * np.exp(-a * a))
    return 0.5 * x * (1.0 + erf)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class NumpyBert:
    """A BERT sentence encoder (mean pooling, unit-normalised) from a sentence-transformers folder."""

    def __init__(self, folder: str | Path, max_seq_length: int | None = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.config = json.loads((folder / "config.json").read_text())
        if max_seq_length is None:
            st_config = folder / "sentence_bert_config.json"
            max_seq_length = json.loads(st_config.read_text())["max_seq_length"] if st_config.exists() else 256
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_seq_length)
        self.tokenizer.no_padding()
        self.w = {
            k: v.astype(np.float32)
            for k, v in load_file(str(folder / "model.safetensors")).items()
            if not k.endswith("position_ids")
        }
        self.heads = self.config["num_attention_heads"]
        self.eps = self.config["layer_norm_eps"]
        self.layers = self.config["num_hidden_layers"]

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def encode_one(self, text: str) -> np.ndarray:
        encoding = self.tokenizer.encode(text)
        ids = np.asarray(encoding.ids, dtype=np.int64)
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][: len(ids)]
            + w["embeddings.token_type_embeddings.weight"][np.asarray(encoding.type_ids, dtype=np.int64)]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        n, hidden = x.shape
        head_dim = hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q = self._linear(x, f"{p}.attention.self.query").reshape(n, self.heads, head_dim).transpose(1, 0, 2)
            k = self._linear(x, f"{p}.attention.self.key").reshape(n, self.heads, head_dim).transpose(1, 0, 2)
            v = self._linear(x, f"{p}.attention.self.value").reshape(n, self.heads, head_dim).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(head_dim)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(n, hidden)
            attended = self._linear(context, f"{p}.attention.output.dense")
            x = _layer_norm(
                attended + x,
                w[f"{p}.attention.output.LayerNorm.weight"],
                w[f"{p}.attention.output.LayerNorm.bias"],
                self.eps,
            )
            inner = _gelu(self._linear(x, f"{p}.intermediate.dense"))
            out = self._linear(inner, f"{p}.output.dense")
            x = _layer_norm(out + x, w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], self.eps)
        pooled = x.mean(0)
        return (pooled / max(np.linalg.norm(pooled), 1e-12)).astype(np.float32)

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.vstack([self.encode_one(t) for t in texts]) if texts else np.zeros((0, 384), np.float32)
