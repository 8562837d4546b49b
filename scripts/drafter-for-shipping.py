#!/usr/bin/env python3
"""Copies a trained drafter's files (adapter.json and adapter.safetensors; with --name redrafter a
ReDrafter head's, with --name specdec a SpecDec block drafter's) in fewer bytes, for shipping: float
tensors as F16 (half of F32), or with --int8 matrices as I8 with an F32 scale per row in NAME_scale
(a quarter). A drafter only drafts, so rounding its weights cannot change any output; loading turns
them back into floats. Compare the copy's tokens a round with the original's before shipping it.

    python3 scripts/drafter-for-shipping.py /tmp/adapter Sources/Adapter/Shipped/NAME
    python3 scripts/drafter-for-shipping.py --int8 /tmp/adapter Sources/Adapter/Shipped/NAME
    python3 scripts/drafter-for-shipping.py --name redrafter /tmp/redrafter Sources/Adapter/Shipped/NAME
"""
import argparse
import json
import pathlib
import shutil
import struct

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I8": np.int8}


def read(path):
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    data = raw[8 + size:]
    tensors = {}
    for name, entry in header.items():
        if name != "__metadata__":
            begin, end = entry["data_offsets"]
            tensors[name] = np.frombuffer(data[begin:end], dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])
    return tensors, header.get("__metadata__")


def write(path, tensors, metadata):
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, values in tensors.items():
        blob = values.tobytes()
        dtype = {v: k for k, v in DTYPES.items()}[values.dtype.type]
        header[name] = {"dtype": dtype, "shape": list(values.shape), "data_offsets": [offset, offset + len(blob)]}
        chunks.append(blob)
        offset += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="adapter", help="the files' stem: adapter, redrafter or specdec")
    parser.add_argument("--int8", action="store_true", help="matrices as I8 with a scale per row")
    parser.add_argument("source", type=pathlib.Path)
    parser.add_argument("target", type=pathlib.Path)
    args = parser.parse_args()
    args.target.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.source / f"{args.name}.json", args.target / f"{args.name}.json")
    tensors, metadata = read(args.source / f"{args.name}.safetensors")
    out = {}
    for name, values in tensors.items():
        if values.dtype.kind != "f":
            out[name] = values
        elif args.int8 and values.ndim == 2:
            floats = values.astype(np.float32)
            scale = np.abs(floats).max(axis=1) / 127
            scale[scale == 0] = 1
            out[name] = np.clip(np.rint(floats / scale[:, None]), -127, 127).astype(np.int8)
            out[name + "_scale"] = scale.astype(np.float32)
        else:
            out[name] = values.astype(np.float16)
    path = args.target / f"{args.name}.safetensors"
    write(path, out, metadata)
    print(f"wrote {path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
