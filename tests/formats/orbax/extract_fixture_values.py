#!/usr/bin/env python3
"""Extracts real TensorStore-written zarr values from the OCDBT fixtures.

The Orbax fixtures in tests/data/fixtures/orbax (orbax-compat/, tunix-sft-step1/)
store their arrays in OCDBT databases. The zarr codec tests (zarr_test.cc) check
the codecs against bytes that TensorStore wrote without going through the OCDBT
reader, and ocdbt_test.cc checks that the reader returns these same bytes. Every
value in these tiny fixtures is stored inline in a single B+tree leaf node
(`<item>/d/<hex>`), so this one-off script decodes that node (envelope:
shared/docs/orbax-format.md §4.3, leaf layout §4.8) and writes the chosen
values as plain files under tests/data/orbax-extracted/.

It was run once; its output is checked in together with a README that gives
the provenance of every file. Re-running it must reproduce the same bytes:

    python3 tests/formats/orbax/extract_fixture_values.py            # write
    python3 tests/formats/orbax/extract_fixture_values.py --check    # compare

Only the standard library is needed; zstd frames are decompressed with
libzstd through ctypes, or with the `zstd` command line tool as a fallback.
The node's CRC-32C is verified with a bitwise implementation here (this is a
test helper, not product code).
"""

import argparse
import ctypes
import ctypes.util
import pathlib
import struct
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "data" / "fixtures" / "orbax"
OUT = REPO / "tests" / "data" / "orbax-extracted"

BTREE_NODE_MAGIC = 0x0CDB20DE

# (fixture item dir relative to FIXTURES, B+tree node file, key, output name)
EXTRACTS = [
    (
        "orbax-compat/v1_checkpoints/composite_checkpoint/checkpoint_metadata_present/"
        "pytree_checkpointable_has_metadata/state",
        "d/6b3188c296298811d6ef3175926acfd5",
        "a/zarr.json",
        "v1_a_zarr.json",
    ),
    (
        "orbax-compat/v1_checkpoints/composite_checkpoint/checkpoint_metadata_present/"
        "pytree_checkpointable_has_metadata/state",
        "d/6b3188c296298811d6ef3175926acfd5",
        "a/c/0",
        "v1_a_c_0.bin",
    ),
    (
        "orbax-compat/v0_checkpoints/direct_checkpoint/checkpoint_metadata_present/"
        "pytree_checkpointable_has_metadata",
        "d/9f51d9b77c0c771353c577b65dc7bba5",
        "a/.zarray",
        "v0_a.zarray",
    ),
    (
        "orbax-compat/v0_checkpoints/direct_checkpoint/checkpoint_metadata_present/"
        "pytree_checkpointable_has_metadata",
        "d/9f51d9b77c0c771353c577b65dc7bba5",
        "a/0",
        "v0_a_0.bin",
    ),
] + [
    # A real 2-D chunked zarr v2 array (f32, shape [2, 4], chunks [1, 2]),
    # laid out as it would be without OCDBT so ArrayReader can read it.
    ("tunix-sft-step1/model_params", "d/8f2ed9d45ec81eba9c5612065ee66958",
     f"w1.kernel.value/{key}", f"tunix/w1.kernel.value/{key}")
    for key in (".zarray", "0.0", "0.1", "1.0", "1.1")
]


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def zstd_decompress(frame: bytes) -> bytes:
    name = ctypes.util.find_library("zstd") or "libzstd.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return subprocess.run(["zstd", "-dc"], input=frame, capture_output=True,
                              check=True).stdout
    lib.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
    lib.ZSTD_getFrameContentSize.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.ZSTD_decompress.restype = ctypes.c_size_t
    lib.ZSTD_decompress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                    ctypes.c_size_t]
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    size = lib.ZSTD_getFrameContentSize(frame, len(frame))
    if size >= 2**64 - 2:  # unknown or error: let the CLI stream it
        return subprocess.run(["zstd", "-dc"], input=frame, capture_output=True,
                              check=True).stdout
    out = ctypes.create_string_buffer(size)
    n = lib.ZSTD_decompress(out, size, frame, len(frame))
    if lib.ZSTD_isError(n) or n != size:
        raise ValueError("zstd frame does not decode")
    return out.raw[:n]


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    def take(self, n: int) -> bytes:
        value = self.data[self.pos:self.pos + n]
        if len(value) != n:
            raise ValueError("truncated")
        self.pos += n
        return value


def decode_envelope(data: bytes, magic: int) -> bytes:
    (got_magic,) = struct.unpack(">I", data[:4])
    (length,) = struct.unpack("<Q", data[4:12])
    if got_magic != magic or length != len(data):
        raise ValueError("bad envelope header")
    (crc,) = struct.unpack("<I", data[-4:])
    if crc != crc32c(data[:-4]):
        raise ValueError("bad envelope crc")
    r = Reader(data[:-4])
    r.pos = 12
    if r.varint() != 0:
        raise ValueError("unknown envelope version")
    compression = r.varint()
    body = data[r.pos:-4]
    return zstd_decompress(body) if compression == 1 else body


def leaf_entries(body: bytes) -> dict:
    r = Reader(body)
    if r.byte() != 0:
        raise ValueError("not a leaf node")
    num_files = r.varint()
    if num_files:
        # Out-of-line values would need this table; skip it (their value_kind
        # is checked below).
        for _ in range(num_files - 1):
            r.varint()  # path_prefix_length
        suffix_lengths = [r.varint() for _ in range(num_files)]
        for _ in range(num_files):
            r.varint()  # base_path_length
        r.take(sum(suffix_lengths))
    n = r.varint()
    prefix_lengths = [0] + [r.varint() for _ in range(n - 1)]
    suffix_lengths = [r.varint() for _ in range(n)]
    keys, previous = [], b""
    for p, s in zip(prefix_lengths, suffix_lengths):
        key = previous[:p] + r.take(s)
        keys.append(key)
        previous = key
    lengths = [r.varint() for _ in range(n)]
    kinds = [r.byte() for _ in range(n)]
    if any(kinds):
        raise ValueError("out-of-line values are not handled by this script")
    return {key.decode(): r.take(length) for key, length in zip(keys, lengths)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the checked-in files instead of writing")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    failures = 0
    for item, node, key, name in EXTRACTS:
        data = (FIXTURES / item / node).read_bytes()
        value = leaf_entries(decode_envelope(data, BTREE_NODE_MAGIC))[key]
        target = OUT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if args.check:
            same = target.exists() and target.read_bytes() == value
            print(f"{'ok' if same else 'DIFFERS'}  {name}")
            failures += not same
        else:
            target.write_bytes(value)
            print(f"wrote {name} ({len(value)} bytes) from {item}/{node} key {key}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
