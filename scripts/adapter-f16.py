#!/usr/bin/env python3
"""Copies a drafter's files (adapter.json and adapter.safetensors; with --name redrafter a ReDrafter
head's, with --name specdec a SpecDec block drafter's) with its float tensors stored as F16, half the
bytes, for shipping: a drafter only drafts, so rounding its weights cannot change any output, and
loading converts them back to floats.

    python3 scripts/adapter-f16.py /tmp/adapter Sources/Adapter/Shipped/NAME
    python3 scripts/adapter-f16.py --name redrafter /tmp/redrafter Sources/Adapter/Shipped/NAME
    python3 scripts/adapter-f16.py --name specdec /tmp/specdec Sources/Adapter/Shipped/NAME
"""
import json
import pathlib
import shutil
import struct
import sys

import numpy as np


def main():
    args = sys.argv[1:]
    stem = "adapter"
    if args[:1] == ["--name"]:
        stem, args = args[1], args[2:]
    source, target = pathlib.Path(args[0]), pathlib.Path(args[1])
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / f"{stem}.json", target / f"{stem}.json")
    raw = (source / f"{stem}.safetensors").read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    data = raw[8 + size:]
    out_header, chunks, offset = {}, [], 0
    for name, entry in header.items():
        if name == "__metadata__":
            out_header[name] = entry
            continue
        begin, end = entry["data_offsets"]
        values = np.frombuffer(data[begin:end], dtype={"F32": np.float32, "F16": np.float16, "I32": np.int32}[entry["dtype"]])
        if entry["dtype"] == "F32":
            values = values.astype(np.float16)
        blob = values.tobytes()
        out_header[name] = {"dtype": "F16" if entry["dtype"] in ("F32", "F16") else entry["dtype"],
                            "shape": entry["shape"], "data_offsets": [offset, offset + len(blob)]}
        chunks.append(blob)
        offset += len(blob)
    encoded = json.dumps(out_header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    (target / f"{stem}.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
    print(f"wrote {target}: {(target / f'{stem}.safetensors').stat().st_size} bytes")


if __name__ == "__main__":
    main()
