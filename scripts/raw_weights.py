#!/usr/bin/env python3
"""Copy a training run's raw (non-EMA) weights into a model folder that kakusan and diffusers load.

    python3 scripts/raw_weights.py RUN_DIR OUT_DIR

`kakusan train` checkpoints the EMA weights in diffusers' layout and keeps the raw weights in
RUN_DIR/training_state.safetensors (tensors `param.<name>`, beside `m.`, `v.` and `ema.`).
This writes OUT_DIR/diffusion_pytorch_model.safetensors from the `param.` tensors and copies
config.json, scheduler_config.json and data_split.json, so that `kakusan eval --model OUT_DIR`
measures what the EMA buys (docs/training.md, "Recipes at equal budget"). Standard library only.
"""
import json
import shutil
import struct
import sys
from pathlib import Path


def read_safetensors(path):
    blob = path.read_bytes()
    if len(blob) < 8:
        sys.exit(f"error: {path} is too short to be a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        sys.exit(f"error: {path}: its header claims {n} bytes but the file has {len(blob)}")
    header = json.loads(blob[8 : 8 + n])
    data = blob[8 + n :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if end > len(data):
            sys.exit(f"error: {path}: tensor {name} runs past the end of the file")
        tensors[name] = (info["dtype"], info["shape"], data[begin:end])
    return tensors


def write_safetensors(path, tensors):
    header, offset, chunks = {}, 0, []
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
    tmp.replace(path)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: python3 scripts/raw_weights.py RUN_DIR OUT_DIR")
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    state = run / "training_state.safetensors"
    if not state.is_file():
        sys.exit(f"error: {state} not found (is {run} a `kakusan train` run folder?)")
    params = {
        name[len("param.") :]: t for name, t in read_safetensors(state).items() if name.startswith("param.")
    }
    if not params:
        sys.exit(f"error: {state} holds no param.* tensors")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "scheduler_config.json", "data_split.json"):
        if (run / name).is_file():
            shutil.copyfile(run / name, out / name)
    write_safetensors(out / "diffusion_pytorch_model.safetensors", params)
    print(f"{len(params)} raw tensors of {state} → {out}")


if __name__ == "__main__":
    main()
