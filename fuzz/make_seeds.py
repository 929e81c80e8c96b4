#!/usr/bin/env python3
"""Builds the seed corpora of the fuzz targets from the repository's test data.

usage: fuzz/make_seeds.py OUT_DIR

Writes OUT_DIR/<target>/<seed> for every target of fuzz/CMakeLists.txt and
OUT_DIR/<target>.dict (libFuzzer dictionaries) where one helps. Seeds come
from tests/data (the real fixtures: safetensors files, index files, config
files, zarr metadata, shards, OCDBT manifests and nodes, _METADATA) plus a
few hand-written hostile inputs. Nothing here is committed: the corpora are
regenerated on every run, so they stay as small as the fixtures allow.
"""
import json
import re
import pathlib
import shutil
import struct
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
FIXTURES = DATA / "fixtures"
MAX_SEED_BYTES = 64 * 1024

MANIFEST_MAGIC = 0x0CDB3A2A
BTREE_MAGIC = 0x0CDB20DE
VERSION_MAGIC = 0x0CDB1234


def write(out, target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name.replace("/", "_")).write_bytes(data)


def rel(path):
    return str(path.relative_to(ROOT)).replace("/", "_")


def small_safetensors(path):
    """The file itself when small, else a valid file with the same header
    entries (names, dtypes, metadata) shrunk to at most 2 elements per axis."""
    data = path.read_bytes()
    if len(data) <= MAX_SEED_BYTES:
        return data
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    sizes = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
             "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4,
             "U64": 8, "I64": 8, "F64": 8}
    offset = 0
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            out[name] = entry
            continue
        shape = [min(d, 2) for d in entry["shape"]]
        count = 1
        for d in shape:
            count *= d
        size = count * sizes[entry["dtype"]]
        out[name] = {"dtype": entry["dtype"], "shape": shape,
                     "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(out, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + bytes(offset)


def envelopes(data, magic):
    """The (start, end) of every envelope with `magic` in a data file."""
    found = []
    pattern = struct.pack(">I", magic)
    start = data.find(pattern)
    while start >= 0:
        if start + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[start + 4 : start + 12])
            if 16 <= length <= len(data) - start:
                found.append((start, start + length))
        start = data.find(pattern, start + 1)
    return found


def body_of(envelope):
    """The decompressed body of an envelope (None when zstd is unavailable)."""
    compression = envelope[13]
    body = envelope[14:-4]
    if compression == 0:
        return body
    try:
        return subprocess.run(["zstd", "-d", "-c"], input=body, capture_output=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = pathlib.Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    # safetensors headers: every fixture file, plus hostile ones.
    for path in sorted(FIXTURES.rglob("*.safetensors")):
        write(out, "fuzz_safetensors_header", rel(path), small_safetensors(path))
    header = b'{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    write(out, "fuzz_safetensors_header", "length_past_end",
          struct.pack("<Q", 1 << 40) + header + bytes(8))
    write(out, "fuzz_safetensors_header", "huge_shape",
          struct.pack("<Q", 71) +
          b'{"t":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}')

    # model.safetensors.index.json: the real ones and escape attempts.
    for path in sorted(FIXTURES.rglob("model.safetensors.index.json")):
        if path.stat().st_size <= MAX_SEED_BYTES:
            write(out, "fuzz_safetensors_index", rel(path), path.read_bytes())
    for name, shard in [("dotdot", "../model-00001-of-00006.safetensors"),
                        ("absolute", "/etc/passwd"), ("dot", ".")]:
        write(out, "fuzz_safetensors_index", "escape_" + name,
              json.dumps({"metadata": {"total_size": 12},
                          "weight_map": {"float16_3": shard}}))

    # config.json: every fixture config; a dictionary of the keys and model
    # types the plugins read.
    for path in sorted(FIXTURES.rglob("config.json")):
        write(out, "fuzz_config_json", rel(path), path.read_bytes())
    tokens = set()
    for source in sorted((ROOT / "plugins").rglob("*.cc")):
        text = source.read_text(errors="replace")
        tokens.update(re.findall(r'"([A-Za-z][A-Za-z0-9_]{2,40})"', text))
    with open(out / "fuzz_config_json.dict", "w") as f:
        for token in sorted(tokens):
            f.write('"%s"\n' % token)

    # zarr metadata: every .zarray / zarr.json of the test data.
    for path in sorted(DATA.rglob("*")):
        if path.is_file() and (path.name.endswith(".zarray") or path.name.endswith("zarr.json")):
            write(out, "fuzz_zarr_metadata", rel(path), path.read_bytes())

    # Stored chunks; the first byte picks the layout (fuzz_zarr_shard.cc).
    extracted = DATA / "orbax-extracted"
    write(out, "fuzz_zarr_shard", "v1_a_c_0", b"\x00" + (extracted / "v1_a_c_0.bin").read_bytes())
    write(out, "fuzz_zarr_shard", "v0_a_0", b"\x04" + (extracted / "v0_a_0.bin").read_bytes())
    for path in sorted((FIXTURES / "orbax" / "legacy-aggregate_some.checkpoint").glob("*/0")):
        write(out, "fuzz_zarr_shard", rel(path), b"\x05" + path.read_bytes())

    # OCDBT: manifests (mode 0 as stored, mode 2 the bare body) and every
    # node found in the data files.
    for path in sorted(FIXTURES.rglob("manifest.ocdbt")):
        data = path.read_bytes()
        write(out, "fuzz_ocdbt_manifest", rel(path), b"\x00" + data)
        body = body_of(data)
        if body is not None:
            write(out, "fuzz_ocdbt_manifest", rel(path) + "_body", b"\x02" + body)
    for path in sorted(FIXTURES.rglob("*")):
        if not path.is_file() or path.parent.name != "d":
            continue
        data = path.read_bytes()
        for kind, magic in ((0, BTREE_MAGIC), (1, VERSION_MAGIC)):
            for start, end in envelopes(data, magic):
                envelope = data[start:end]
                name = "%s_%d" % (rel(path), start)
                write(out, "fuzz_ocdbt_node", name, bytes([kind]) + envelope)
                body = body_of(envelope)
                if body is not None:
                    write(out, "fuzz_ocdbt_node", name + "_body", bytes([4 + kind]) + body)

    # _METADATA files.
    for path in sorted(FIXTURES.rglob("_METADATA")):
        write(out, "fuzz_orbax_metadata", rel(path), path.read_bytes())

    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    counts = {d.name: len(list(d.iterdir())) for d in sorted(out.iterdir()) if d.is_dir()}
    print("seeds: %s (%d bytes in all)" % (counts, total))


if __name__ == "__main__":
    main()
