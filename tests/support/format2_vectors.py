#!/usr/bin/env python3
"""Format-2 test vectors, computed from docs/FORMAT.md Part II alone.

Writes fixtures/v2/vectors.json (the derived keys and chunk ids of a fixed
master key) and fixtures/v2/pack.bin (a pack of three chunks: one stored
raw, one zstd-compressed, one empty), so that coffer's reader is checked
against bytes it did not write. Run from the repository root:
    python3 tests/support/format2_vectors.py
"""
import hashlib
import blake3
import json
import struct

import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MASTER = bytes([7]) * 32
REPO_ID = "00112233445566778899aabbccddeeff"
SALT = bytes([9]) * 32


def hkdf(salt, ikm, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def subkey(name):
    return hkdf(REPO_ID.encode(), MASTER, b"coffer/v2/" + name.encode())


ID_KEY = subkey("chunk-id")
PACK_KEY = subkey("pack")
INDEX_KEY = subkey("index")
SEED = struct.unpack(">Q", subkey("chunker-seed")[:8])[0]


def chunk_id(data):
    return blake3.blake3(data, key=ID_KEY).digest()


def build_pack(chunks):
    header = b"COFFERPK" + bytes([1, 0, 0, 0]) + SALT
    aead = AESGCM(hkdf(SALT, PACK_KEY, b"coffer/v2/pack-blob-key"))
    out = bytearray(header)
    table = bytearray()
    for kind, compress, data in chunks:
        cid = chunk_id(data)
        stored = zstandard.ZstdCompressor(level=3).compress(data) if compress else data
        offset = len(out)
        nonce = bytes(4) + struct.pack(">Q", offset)
        aad = header + bytes([kind, 1 if compress else 0]) + cid
        sealed = aead.encrypt(nonce, stored, aad)
        out += sealed
        table += cid + bytes([kind, 1 if compress else 0, 0, 0])
        table += struct.pack(">III", offset, len(sealed), len(data))
    sealed_table = aead.encrypt(b"\xff" * 12, bytes(table), header + b"table")
    out += sealed_table + struct.pack(">I", len(sealed_table))
    return bytes(out)


def main():
    raw = bytes((i * 167) % 256 for i in range(3000))
    chunks = [(0, False, raw), (1, True, b"compressible " * 1000), (0, False, b"")]
    pack = build_pack(chunks)
    with open("fixtures/v2/pack.bin", "wb") as f:
        f.write(pack)
    vectors = {
        "master_key": MASTER.hex(),
        "repository_id": REPO_ID,
        "subkeys": {
            "chunk-id": ID_KEY.hex(),
            "pack": PACK_KEY.hex(),
            "index": INDEX_KEY.hex(),
            "chunker-seed": SEED,
        },
        "chunk_ids": {
            "hello": chunk_id(b"hello").hex(),
            "empty": chunk_id(b"").hex(),
        },
        "pack": {
            "file": "pack.bin",
            "salt": SALT.hex(),
            "sha256": hashlib.sha256(pack).hexdigest(),
            "chunks": [
                {"type": k, "compression": 1 if c else 0, "id": chunk_id(d).hex(),
                 "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                for k, c, d in chunks
            ],
        },
    }
    with open("fixtures/v2/vectors.json", "w") as f:
        json.dump(vectors, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
