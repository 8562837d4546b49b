#!/usr/bin/env python3
"""Writes tiny random GGUF models of each architecture this engine runs (llama, qwen2, qwen3), their
tensors spread over every weight format, into Tests/fixtures/tiny-ARCH.gguf (under 1 MB each), and
for each the top-5 log-probabilities at every position of a fixed token sequence from llama.cpp
(llama-cpp-python) and from the float64 reference (scripts/float-reference.py) into
Tests/fixtures/tiny-ARCH.json. The tests hold the engine to both, so architectures and formats without
a real file here are checked too.

    python3 -m pip install gguf==0.19.0 numpy llama-cpp-python==0.3.36
    python3 scripts/make-tiny-models.py
"""
import importlib.util
import json
import pathlib

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, GGUFWriter

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "Tests" / "fixtures"
HIDDEN, FFN, HEADS, KV_HEADS, HEAD_SIZE, LAYERS, VOCAB = 256, 256, 4, 2, 64, 1, 256
SEQUENCE = [(37 * i + 11) % VOCAB for i in range(24)]

# Formats per tensor role (256 columns each: K-quants need whole blocks of 256), so every format is read somewhere.
FORMATS = {
    "llama": {"attn_q": T.Q4_0, "attn_k": T.Q4_1, "attn_v": T.Q5_0, "attn_output": T.Q5_1, "ffn_gate": T.Q8_0,
              "ffn_up": T.Q2_K, "ffn_down": T.Q3_K, "token_embd": T.Q8_0, "output": T.Q6_K},
    "qwen2": {"attn_q": T.Q4_K, "attn_k": T.Q5_K, "attn_v": T.Q6_K, "attn_output": T.F16, "ffn_gate": T.BF16,
              "ffn_up": T.Q5_0, "ffn_down": T.Q4_K, "token_embd": T.Q5_0, "output": T.Q8_0},
    "qwen3": {"attn_q": T.Q6_K, "attn_k": T.Q4_0, "attn_v": T.Q4_K, "attn_output": T.Q5_K, "ffn_gate": T.Q4_1,
              "ffn_up": T.F32, "ffn_down": T.Q6_K, "token_embd": T.F16, "output": T.Q8_0},
}
# f16 fields of each block format (random bytes there could be infinities).
HALF_OFFSETS = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q2_K: [80, 82],
                T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}
# The largest |integer × sub-scale| of each format, so that d = scale / it keeps weights near `scale`.
MAGNITUDE = {T.Q4_0: 8, T.Q4_1: 15, T.Q5_0: 16, T.Q5_1: 31, T.Q8_0: 127, T.Q2_K: 45, T.Q3_K: 128, T.Q4_K: 945,
             T.Q5_K: 1953, T.Q6_K: 4064}


def weight(rng, kind, rows, columns, scale):
    """A random matrix in `kind`: float formats hold values, block formats random blocks with sane scales."""
    if kind in (T.F32, T.F16, T.BF16):
        values = rng.normal(0, scale, size=(rows, columns)).astype(np.float32)
        if kind == T.F16:
            return values.astype(np.float16), None
        if kind == T.BF16:
            return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(rows, columns * 2), kind
        return values, None
    block_size, block_bytes = GGML_QUANT_SIZES[kind]
    blocks = rng.integers(0, 256, size=(rows * columns // block_size, block_bytes), dtype=np.uint8)
    for o in HALF_OFFSETS[kind]:
        d = rng.uniform(0.5, 1.0, size=blocks.shape[0]) * 4 * scale / MAGNITUDE[kind]
        blocks[:, o:o + 2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1), kind


def write(arch, path, rng):
    formats = FORMATS[arch]
    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_key_length(HEAD_SIZE)
    writer.add_value_length(HEAD_SIZE)
    writer.add_rope_dimension_count(HEAD_SIZE)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    # A byte-level vocabulary (llama.cpp needs one to load; the tests feed token ids).
    tokens = [f"<t{i}>" for i in range(VOCAB - 2)] + ["<|endoftext|>", "<|im_end|>"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2" if arch != "llama" else "default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (VOCAB - 2) + [3, 3])
    writer.add_token_merges(["< t"])
    writer.add_bos_token_id(VOCAB - 2)
    writer.add_eos_token_id(VOCAB - 1)

    def add(name, rows, columns, kind, scale):
        data, raw = weight(rng, kind, rows, columns, scale)
        writer.add_tensor(name, data, raw_dtype=raw)

    def vector(name, n, around=1.0):
        writer.add_tensor(name, (around + rng.normal(0, 0.1, size=n)).astype(np.float32))

    add("token_embd.weight", VOCAB, HIDDEN, formats["token_embd"], 1.0)
    vector("output_norm.weight", HIDDEN)
    if formats["output"] is not None:
        add("output.weight", VOCAB, HIDDEN, formats["output"], 0.1)
    for layer in range(LAYERS):
        p = f"blk.{layer}."
        vector(p + "attn_norm.weight", HIDDEN)
        add(p + "attn_q.weight", HEADS * HEAD_SIZE, HIDDEN, formats["attn_q"], 0.1)
        add(p + "attn_k.weight", KV_HEADS * HEAD_SIZE, HIDDEN, formats["attn_k"], 0.1)
        add(p + "attn_v.weight", KV_HEADS * HEAD_SIZE, HIDDEN, formats["attn_v"], 0.1)
        add(p + "attn_output.weight", HIDDEN, HEADS * HEAD_SIZE, formats["attn_output"], 0.05)
        if arch == "qwen2":
            vector(p + "attn_q.bias", HEADS * HEAD_SIZE, 0.0)
            vector(p + "attn_k.bias", KV_HEADS * HEAD_SIZE, 0.0)
            vector(p + "attn_v.bias", KV_HEADS * HEAD_SIZE, 0.0)
        if arch == "qwen3":
            vector(p + "attn_q_norm.weight", HEAD_SIZE)
            vector(p + "attn_k_norm.weight", HEAD_SIZE)
        vector(p + "ffn_norm.weight", HIDDEN)
        add(p + "ffn_gate.weight", FFN, HIDDEN, formats["ffn_gate"], 0.1)
        add(p + "ffn_up.weight", FFN, HIDDEN, formats["ffn_up"], 0.1)
        add(p + "ffn_down.weight", HIDDEN, FFN, formats["ffn_down"], 0.05)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp_top5(path):
    from llama_cpp import Llama
    llm = Llama(model_path=str(path), n_ctx=64, logits_all=True, n_threads=2, verbose=False)
    llm.eval(SEQUENCE)
    out = []
    for p in range(len(SEQUENCE)):
        logits = llm.scores[p].astype(np.float64)
        top = logits.max()
        logprobs = logits - (np.log(np.exp(logits - top).sum()) + top)
        out.append([[int(t), round(float(logprobs[t]), 5)] for t in np.argsort(-logprobs)[:5]])
    return out


def main():
    spec = importlib.util.spec_from_file_location("float_reference", ROOT / "scripts" / "float-reference.py")
    float_reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(float_reference)
    rng = np.random.default_rng(31)
    for arch in FORMATS:
        path = FIXTURES / f"tiny-{arch}.gguf"
        write(arch, path, rng)
        fixture = {"ids": SEQUENCE, "llama_cpp": llama_cpp_top5(path),
                   "float": float_reference.forward_top5(str(path), [SEQUENCE])[0]}
        (FIXTURES / f"tiny-{arch}.json").write_text(json.dumps(fixture) + "\n")
        print(f"wrote {path} ({path.stat().st_size} bytes) and its references")


if __name__ == "__main__":
    main()
