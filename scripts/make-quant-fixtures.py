#!/usr/bin/env python3
"""Writes Tests/fixtures/quant-blocks.json: random blocks of every quantised GGUF format we read, with
their values as the `gguf` package (PyPI, llama.cpp's own Python reader) dequantises them. The tests
check `dequantize` against these, so the formats' layouts come from llama.cpp's side, not ours.

    python3 -m pip install gguf==0.19.0 numpy && python3 scripts/make-quant-fixtures.py
"""
import json
import pathlib

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, quants

# Byte offsets of each block's f16 scales: random bytes there could be infinities or NaNs.
HALF_OFFSETS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
BLOCKS = 2


def main():
    rng = np.random.default_rng(20261206)
    out = {}
    for kind, offsets in HALF_OFFSETS.items():
        block_size, block_bytes = GGML_QUANT_SIZES[kind]
        raw = rng.integers(0, 256, size=(BLOCKS, block_bytes), dtype=np.uint8)
        for b in range(BLOCKS):
            for o in offsets:
                raw[b, o:o + 2] = np.frombuffer(np.float16(rng.uniform(-0.05, 0.05)).tobytes(), dtype=np.uint8)
        values = quants.dequantize(raw.reshape(1, -1), kind).reshape(-1)
        assert values.size == BLOCKS * block_size
        out[kind.name] = {"bytes": raw.reshape(-1).tobytes().hex(), "values": [float(v) for v in values]}
    path = pathlib.Path(__file__).resolve().parent.parent / "Tests" / "fixtures" / "quant-blocks.json"
    path.write_text(json.dumps(out, indent=0) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
