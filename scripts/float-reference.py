#!/usr/bin/env python3
"""Writes an independent float64 reference for a GGUF model into a test fixture: the weights dequantised
by llama.cpp's `gguf` Python package, the forward pass (Llama, Qwen2 or Qwen3: RMSNorm, RoPE, grouped-query
attention, SwiGLU) written out in numpy with no quantisation of activations, and its top-5
log-probabilities at every position of each sequence. The token ids come from a fixture of
scripts/llamacpp-reference.py, so tokenisation is llama.cpp's.

    python3 -m pip install gguf==0.19.0 numpy
    python3 scripts/float-reference.py MODEL.gguf LLAMACPP-FIXTURE.json OUT.json [--cases 2] [--positions 48]
"""
import argparse
import json

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def forward_top5(model_path, sequences):
    """The float64 forward pass over each sequence of token ids: per position, [[id, logprob] × 5]."""
    reader = GGUFReader(model_path)
    tensors = {t.name: t for t in reader.tensors}

    def field(key, default=None):
        return reader.fields[key].contents() if key in reader.fields else default

    def weight(name):
        t = tensors[name]
        return dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)]).astype(np.float64)

    arch = field("general.architecture")
    assert arch in ("llama", "qwen2", "qwen3"), arch
    eps = float(field(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5))
    layers = int(field(f"{arch}.block_count"))
    heads = int(field(f"{arch}.attention.head_count"))
    kv_heads = int(field(f"{arch}.attention.head_count_kv", heads))
    base = float(field(f"{arch}.rope.freq_base", 10000.0))
    hidden = int(field(f"{arch}.embedding_length"))
    head_size = int(field(f"{arch}.attention.key_length", hidden // heads))
    halves = arch != "llama"  # GGML's NeoX RoPE; Llama files pair adjacent dimensions

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

    def rope(x, positions):  # x: [tokens, heads, head_size]
        half = head_size // 2
        freqs = base ** (-2.0 * np.arange(half) / head_size)
        angles = positions[:, None] * freqs[None, :]
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        if halves:
            a, b = x[..., :half], x[..., half:]
            return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    embedding = weight("token_embd.weight")
    states = [embedding[np.array(s)] for s in sequences]
    del embedding
    for layer in range(layers):
        p = f"blk.{layer}."
        w = {name: weight(p + name) for name in ("attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                                                 "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight",
                                                 "ffn_up.weight", "ffn_down.weight")}
        for name in ("attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_q_norm.weight", "attn_k_norm.weight"):
            w[name] = weight(p + name) if p + name in tensors else None
        for i, x in enumerate(states):
            count = x.shape[0]
            positions = np.arange(count, dtype=np.float64)

            def project(name, n, heads_here):
                y = n @ w[name + ".weight"].T
                if w[name + ".bias"] is not None:
                    y = y + w[name + ".bias"]
                return y.reshape(count, heads_here, head_size)

            n = rms(x, w["attn_norm.weight"])
            q, k, v = project("attn_q", n, heads), project("attn_k", n, kv_heads), project("attn_v", n, kv_heads)
            if w["attn_q_norm.weight"] is not None:
                q, k = rms(q, w["attn_q_norm.weight"]), rms(k, w["attn_k_norm.weight"])
            q, k = rope(q, positions), rope(k, positions)
            k, v = np.repeat(k, heads // kv_heads, axis=1), np.repeat(v, heads // kv_heads, axis=1)
            scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(head_size)
            scores += np.triu(np.full((count, count), -np.inf), 1)[None]
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            attention = np.einsum("hqk,khd->qhd", scores, v).reshape(count, heads * head_size)
            x = x + attention @ w["attn_output.weight"].T
            n = rms(x, w["ffn_norm.weight"])
            gate, up = n @ w["ffn_gate.weight"].T, n @ w["ffn_up.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w["ffn_down.weight"].T
            states[i] = x
    norm = weight("output_norm.weight")
    head = weight("output.weight" if "output.weight" in tensors else "token_embd.weight")
    out = []
    for x in states:
        logits = rms(x, norm) @ head.T
        top = logits.max(axis=-1, keepdims=True)
        logprobs = logits - (np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)) + top)
        out.append([[[int(t), round(float(row[t]), 5)] for t in np.argsort(-row)[:5]] for row in logprobs])
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("llamacpp_fixture")
    parser.add_argument("output")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--positions", type=int, default=48)
    args = parser.parse_args()
    cases = json.load(open(args.llamacpp_fixture))["cases"][: args.cases]
    sequences = [(case["ids"] + case["greedy"])[: args.positions] for case in cases]
    out = [{"ids": ids, "top5": top5} for ids, top5 in zip(sequences, forward_top5(args.model, sequences))]
    with open(args.output, "w") as f:
        json.dump({"model": args.model.rsplit("/", 1)[-1], "reference": "float64 numpy over gguf-dequantised weights",
                   "cases": out}, f)
        f.write("\n")
    print(f"wrote {args.output}: {len(out)} sequences")


if __name__ == "__main__":
    main()
