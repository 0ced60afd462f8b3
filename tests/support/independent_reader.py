#!/usr/bin/env python3
"""An independent reader of coffer repositories, written from docs/FORMAT.md.

It shares no code with coffer: it implements the key slots, the sealed-object
(STREAM) format, the manifest, the index and the tar archive from the
document's description alone, with only these PyPI packages:

    cryptography   (AES-256-GCM, HKDF-SHA256, Argon2id)
    zstandard      (zstd decompression)
    blake3         (format 2 chunk ids)

Usage:
    independent_reader.py list    --repo DIR (--key-file KEY | --passphrase P)
    independent_reader.py extract --repo DIR (--key-file KEY | --passphrase P) --out DIR
    independent_reader.py vectors --vectors DIR --repo DIR --key-file KEY --scratch DIR

`list` prints the snapshots; `extract` verifies every snapshot (sizes and
SHA-256 from the manifest, every segment, every file against the index) and
writes each source to OUT/<snapshot id>/<source name>/; `vectors` checks the
test vectors of fixtures/vectors (expected plaintexts and failures, and that
every damaged copy of a repository object is rejected). Each prints one JSON
document on stdout and exits 0; an integrity failure exits 3, anything else 1.

Section numbers (§) refer to docs/FORMAT.md.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
import zstandard
import blake3


class IntegrityError(Exception):
    """Damaged, tampered, truncated or foreign data, or a wrong key."""

    def __init__(self, category, message):
        super().__init__(f"{category}: {message}")
        self.category = category


# ---------------------------------------------------------------- §1, §3, §4


def hkdf_sha256(salt, ikm, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def is_int(v):
    return type(v) is int  # not bool


def read_config(repo):
    """§3: the parsed config and its exact bytes (bound into every key slot)."""
    with open(os.path.join(repo, "config"), "rb") as f:
        raw = f.read()
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise IntegrityError("damaged-config", "config is not JSON")
    if not isinstance(cfg, dict) or cfg.get("format") != "coffer-repository":
        raise IntegrityError("damaged-config", "not a coffer repository")
    if not is_int(cfg.get("version")) or cfg["version"] < 1:
        raise IntegrityError("damaged-config", f"repository version {cfg.get('version')!r}")
    if cfg["version"] not in (1, 2):
        raise IntegrityError("unsupported-version", f"repository version {cfg['version']}")
    if (cfg["version"] == 2) != ("chunker" in cfg):
        raise IntegrityError("damaged-config", "a chunker belongs to format 2 only, and format 2 needs one")
    if cfg["version"] == 1 and "chunk_id" in cfg:
        raise IntegrityError("damaged-config", "a chunk_id belongs to format 2 only")
    if cfg.get("chunk_id", "blake3-keyed") != "blake3-keyed":
        raise IntegrityError("unsupported-version", "chunk ids of algorithm %r are not known" % cfg["chunk_id"])
    if not isinstance(cfg.get("id"), str):
        raise IntegrityError("damaged-config", "config has no repository id")
    return cfg, raw


def read_key_file(path):
    with open(path, "r", encoding="utf-8") as f:
        text = f.read().strip()
    prefix = "coffer-key-v1:"
    if not text.startswith(prefix):
        raise ValueError(f"{path} is not a coffer key file")
    key = base64.b64decode(text[len(prefix):].strip(), validate=True)
    if len(key) != 32:
        raise ValueError(f"{path}: key is not 32 bytes")
    return key


# ---------------------------------------------------------------- §5 key slots


def slot_kek(slot, key_file_key, passphrase):
    kdf = slot["kdf"]
    salt = base64.b64decode(kdf["salt"])
    if slot["kind"] == "key_file" and kdf["algorithm"] == "hkdf-sha256" and key_file_key is not None:
        return hkdf_sha256(salt, key_file_key, b"coffer/v1/key-file-kek")
    if slot["kind"] == "passphrase" and kdf["algorithm"] == "argon2id" and passphrase is not None:
        m, t, p = kdf["m_cost_kib"], kdf["t_cost"], kdf["p_cost"]
        if m > 4194304 or t > 100 or p > 64:
            return None
        return Argon2id(salt=salt, length=32, iterations=t, lanes=p, memory_cost=m).derive(
            passphrase.encode("utf-8")
        )
    return None


SLOT_FIELDS = {"version", "id", "kind", "created", "host", "kdf", "nonce", "wrapped_key"}


def slot_aad(slot, repo_id, config_raw):
    """§5 "The wrap": the label, then each part preceded by one zero byte."""
    parts = [
        repo_id.encode("utf-8"),
        str(slot["version"]).encode("ascii"),  # decimal text: "1"
        slot["id"].encode("utf-8"),
        slot["kind"].encode("utf-8"),
        slot["created"].encode("utf-8"),  # the JSON string value, as stored
        slot.get("host", "").encode("utf-8"),  # absent: ""
        hashlib.sha256(config_raw).digest(),  # 32 raw bytes
    ]
    return b"coffer/v1/key-slot" + b"".join(b"\x00" + p for p in parts)


def unlock(repo, repo_id, config_raw, key_file_key=None, passphrase=None):
    """The master key from the first slot the credential opens."""
    keys_dir = os.path.join(repo, "keys")
    names = sorted(os.listdir(keys_dir)) if os.path.isdir(keys_dir) else []
    for name in names:
        try:
            with open(os.path.join(keys_dir, name), "rb") as f:
                slot = json.loads(f.read().decode("utf-8"))
            # Unknown fields, another version or a name that is not the id:
            # the slot is not tried.
            if not isinstance(slot, dict) or set(slot) - SLOT_FIELDS:
                continue
            if not is_int(slot.get("version")) or slot["version"] != 1 or slot.get("id") != name:
                continue
            if slot.get("kind") not in ("key_file", "passphrase"):
                continue
            if not isinstance(slot.get("created"), str) or not isinstance(slot.get("host", ""), str):
                continue
            kek = slot_kek(slot, key_file_key, passphrase)
            if kek is None:
                continue
            nonce = base64.b64decode(slot["nonce"])
            wrapped = base64.b64decode(slot["wrapped_key"])
            if len(nonce) != 12 or len(wrapped) != 48:
                continue
        except (ValueError, KeyError, TypeError):
            continue  # a slot that does not parse is skipped
        try:
            return AESGCM(kek).decrypt(nonce, wrapped, slot_aad(slot, repo_id, config_raw))
        except InvalidTag:
            continue
    raise IntegrityError(
        "wrong-key",
        f"no key slot of {repo} opens with this credential (wrong key, or config or key slots altered)",
    )


# ---------------------------------------------------------------- §6 sealed objects

HEADER_LEN = 44
TAG_LEN = 16
MAX_SEGMENT = 16777216
KINDS = {"A": b"A", "I": b"I", "M": b"M", "X": b"X"}


def context(repo_id, snapshot_id, source=None):
    c = b"coffer/v1" + b"\x00" + repo_id.encode() + b"\x00" + snapshot_id.encode()
    if source is not None:
        c += b"\x00" + source.encode()
    return c


def nonce(i, last):
    return i.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def open_sealed(stream, master, kind, ctx):
    """Yields the plaintext of a sealed object segment by segment, each only
    after its tag verified; raises IntegrityError on any damage."""
    header = stream.read(HEADER_LEN)
    if len(header) < 6 or header[:6] != b"COFFER":
        if 0 < len(header) < 6 and b"COFFER".startswith(header):
            raise IntegrityError("short-header", f"{len(header)} of 44 header bytes")
        raise IntegrityError("bad-magic", "not a coffer object")
    if len(header) < HEADER_LEN:
        raise IntegrityError("short-header", f"{len(header)} of 44 header bytes")
    if header[6] != 1:
        raise IntegrityError("unsupported-version", f"sealed-object version {header[6]}")
    if header[7:8] not in (b"A", b"I", b"M", b"X"):
        raise IntegrityError("bad-magic", f"unknown kind byte {header[7]:#x}")
    if header[7:8] != KINDS[kind]:
        raise IntegrityError("wrong-kind", f"holds kind {header[7:8].decode()}, expected {kind}")
    seg = int.from_bytes(header[40:44], "big")
    if seg == 0 or seg > MAX_SEGMENT:
        raise IntegrityError("bad-segment-size", f"segment size {seg}")
    aes = AESGCM(hkdf_sha256(header[8:40], master, b"coffer/v1/object-key"))
    aad = header + ctx
    want = seg + TAG_LEN
    i = 0
    chunk = stream.read(want)
    while True:
        if len(chunk) == want:
            nxt = stream.read(want)
            last = len(nxt) == 0
        else:
            nxt, last = b"", True
        if len(chunk) < TAG_LEN:
            raise IntegrityError("truncated", "the object ends inside a segment tag")
        try:
            plain = aes.decrypt(nonce(i, last), chunk, aad)
        except InvalidTag:
            if last and len(chunk) == want:
                try:
                    aes.decrypt(nonce(i, False), chunk, aad)
                    raise IntegrityError("truncated", "the object ends before its final segment")
                except InvalidTag:
                    pass
            raise IntegrityError("authentication", f"segment {i} does not authenticate")
        yield plain
        if last:
            return
        i += 1
        chunk = nxt


def open_sealed_bytes(data, master, kind, ctx):
    return b"".join(open_sealed(io.BytesIO(data), master, kind, ctx))


def read_object(repo, ref, master, kind, ctx):
    """§11 step 4 then 5: check size and SHA-256 of the stored bytes, then
    open the sealed object; returns the whole (authenticated) plaintext."""
    path = os.path.join(repo, *ref["object"].split("/"))
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise IntegrityError("missing", f"object {ref['object']} is missing")
    if len(raw) != ref["size"] or hashlib.sha256(raw).hexdigest() != ref["sha256"]:
        raise IntegrityError("checksum", f"object {ref['object']}: size/SHA-256 differ from the manifest")
    return open_sealed_bytes(raw, master, kind, ctx)


# ---------------------------------------------------------------- §7 manifests


def time_key(t):
    # "YYYY-MM-DDTHH:MM:SS[.fraction]Z", always UTC (§1)
    body = t.rstrip("Z")
    secs, _, frac = body.partition(".")
    return (secs, int((frac + "000000000")[:9]))


def load_manifests(repo, repo_id, master, version=1):
    snaps_dir = os.path.join(repo, "snapshots")
    out = []
    for sid in sorted(os.listdir(snaps_dir)) if os.path.isdir(snaps_dir) else []:
        with open(os.path.join(snaps_dir, sid), "rb") as f:
            raw = f.read()
        # §21: format 2 manifests have their own context.
        ctx = context(repo_id, sid) if version == 1 else b"coffer/v2\x00" + repo_id.encode() + b"\x00" + sid.encode()
        plain = open_sealed_bytes(raw, master, "M", ctx)
        m = json.loads(plain.decode("utf-8"))
        if m.get("id") != sid:
            raise IntegrityError("manifest", f"snapshots/{sid} names snapshot {m.get('id')}")
        if not is_int(m.get("version")) or m["version"] < 1:
            raise IntegrityError("manifest", f"snapshots/{sid}: manifest version {m.get('version')!r}")
        if m["version"] > 2:
            raise IntegrityError("unsupported-version", f"manifest version {m.get('version')}")
        if m["version"] != version:
            raise IntegrityError("manifest", f"snapshots/{sid}: manifest version {m['version']} in a format {version} repository")
        out.append(m)
    out.sort(key=lambda m: (time_key(m["time"]), m["id"]))
    return out


# ---------------------------------------------------------------- §10 zstd


def unzstd(data):
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    out = io.BytesIO()
    while True:
        b = reader.read(1 << 16)
        if not b:
            break
        out.write(b)
    return out.getvalue()


# ---------------------------------------------------------------- §9 tar


def tar_number(field):
    if field and field[0] & 0x80:  # GNU base-256
        v = field[0] & 0x7F
        for b in field[1:]:
            v = (v << 8) | b
        return v
    s = field.rstrip(b"\x00 ").lstrip(b" ")
    return int(s, 8) if s else 0


def tar_string(field):
    return field.split(b"\x00", 1)[0]


def pax_records(data):
    recs = {}
    pos = 0
    while pos < len(data):
        sp = data.index(b" ", pos)
        length = int(data[pos:sp])
        rec = data[pos:pos + length]
        if length <= 0 or not rec.endswith(b"\n"):
            raise IntegrityError("archive", "malformed PAX record")
        key, _, value = rec[sp - pos + 1:-1].partition(b"=")
        recs[key.decode("utf-8")] = value
        pos += length
    return recs


def tar_entries(data):
    """Yields (name, typeflag, linkname, mode, size, body, owner) per entry,
    owner being (uid, gid, mtime); PAX headers are applied to the entry they
    precede (§9)."""
    pos = 0
    pax = {}
    while True:
        block = data[pos:pos + 512]
        if len(block) < 512:
            raise IntegrityError("archive", "the tar stream ends without its end-of-archive blocks")
        if block == bytes(512):
            if data[pos + 512:pos + 1024] != bytes(512):
                raise IntegrityError("archive", "a single zero block inside the tar stream")
            if data[pos + 1024:].strip(b"\x00"):
                raise IntegrityError("archive", "data after the end-of-archive blocks")
            return
        chk = tar_number(block[148:156])
        if chk != sum(block[:148]) + 8 * 32 + sum(block[156:]):
            raise IntegrityError("archive", f"bad tar header checksum at offset {pos}")
        if block[257:263] != b"ustar\x00":
            raise IntegrityError("archive", "not a ustar header")
        typeflag = chr(block[156])
        size = tar_number(block[124:136])
        if "size" in pax:
            size = int(pax["size"])
        body = data[pos + 512:pos + 512 + size]
        if len(body) != size:
            raise IntegrityError("archive", "the tar stream ends inside an entry")
        pos += 512 + (size + 511) // 512 * 512
        if typeflag == "x":
            pax = pax_records(body)
            continue
        if typeflag == "g":
            raise IntegrityError("archive", "unexpected PAX global header")
        name = pax.get("path", tar_string(block[0:100]))
        link = pax.get("linkpath", tar_string(block[157:257]))
        mode = tar_number(block[100:108])
        uid = int(pax["uid"]) if "uid" in pax else tar_number(block[108:116])
        gid = int(pax["gid"]) if "gid" in pax else tar_number(block[116:124])
        mtime = tar_number(block[136:148])
        pax = {}
        yield name.decode("utf-8"), typeflag, link.decode("utf-8"), mode, size, body, (uid, gid, mtime)


def index_path(tar_name):
    # §11 step 5: trailing '/' removed, "./" read as ".", leading "./" removed.
    n = tar_name.rstrip("/")
    if n in ("", "."):
        return "."
    if n.startswith("./"):
        n = n[2:]
    return n


def check_safe(path):
    # §11 step 6
    if path == ".":
        return
    if path.startswith("/") or "\x00" in path:
        raise IntegrityError("unsafe-path", f"{path!r} is absolute or holds NUL")
    for c in path.split("/"):
        if c in ("", ".", ".."):
            raise IntegrityError("unsafe-path", f"{path!r} has an empty, '.' or '..' component")


TYPES = {"0": "file", "5": "dir", "2": "symlink", "1": "hardlink"}

# §7: the source types whose archive holds dump streams in chunk entries (§9).
DUMP_TYPES = {"postgres", "mysql", "sqlite", "redis", "command"}
CHUNK = 4194304


def dump_streams(src, entries):
    """§9: rebuilds a dump source's streams from its chunk entries, checks
    them against details.streams, and returns them."""
    streams = []
    for e, body, _tar in entries:
        name, _, num = e["path"].rpartition("/")
        if e["type"] != "file" or not name or len(num) != 6 or not num.isdigit():
            raise IntegrityError("archive", f"{e['path']!r} is not a dump chunk entry")
        if streams and streams[-1]["name"] == name:
            s = streams[-1]
            if s["last_size"] != CHUNK:
                raise IntegrityError("archive", f"{e['path']!r} follows a chunk shorter than 4 MiB")
            if e["size"] == 0:
                raise IntegrityError("archive", f"{e['path']!r}: an empty chunk after a full one")
        else:
            if any(s["name"] == name for s in streams):
                raise IntegrityError("archive", f"stream {name!r} interleaves with another")
            s = {"name": name, "bytes": 0, "chunks": 0, "hash": hashlib.sha256(), "last_size": None}
            streams.append(s)
        if int(num) != s["chunks"] or e["size"] > CHUNK:
            raise IntegrityError("archive", f"{e['path']!r}: chunks out of order or over 4 MiB")
        s["hash"].update(body)
        s["bytes"] += e["size"]
        s["chunks"] += 1
        s["last_size"] = e["size"]
    out = [{"name": s["name"], "bytes": s["bytes"], "chunks": s["chunks"], "sha256": s["hash"].hexdigest()}
           for s in streams]
    recorded = src.get("details", {}).get("streams")
    if recorded != out:
        raise IntegrityError("manifest", f"streams in the archive {out} differ from the manifest's {recorded}")
    return out


# ---------------------------------------------------------------- Part II: format 2


def v2_key(master, repo_id, name):
    """§17.1: K(name)."""
    return hkdf_sha256(repo_id.encode("ascii"), master, b"coffer/v2/" + name.encode())


class Chunks:
    """§18, §19: where every chunk is (the union of the index objects), and
    reading one back, checked against its id."""

    def __init__(self, repo, repo_id, master):
        self.repo = repo
        self.id_key = v2_key(master, repo_id, "chunk-id")
        self.pack_key = v2_key(master, repo_id, "pack")
        index_key = v2_key(master, repo_id, "index")
        self.where = {}
        idir = os.path.join(repo, "index")
        for name in sorted(os.listdir(idir)) if os.path.isdir(idir) else []:
            with open(os.path.join(idir, name), "rb") as f:
                raw = f.read()
            ctx = b"coffer/v2\x00" + repo_id.encode() + b"\x00index\x00" + name.encode()
            plain = unzstd(open_sealed_bytes(raw, index_key, "X", ctx))
            if plain[:4] != b"CIX1":
                raise IntegrityError("index", f"index/{name} does not start with CIX1")
            n = int.from_bytes(plain[4:8], "big")
            at = 8 + 8 * n
            while at < len(plain):
                pack = plain[at:at + 32]
                count = int.from_bytes(plain[at + 32:at + 36], "big")
                at += 36
                for _ in range(count):
                    e = plain[at:at + 48]
                    if len(e) != 48:
                        raise IntegrityError("index", f"index/{name} ends inside an entry")
                    at += 48
                    self.where.setdefault(e[:32], (pack, e))
            if at != len(plain):
                raise IntegrityError("index", f"index/{name} ends inside a record")

    def read(self, chunk_hex):
        cid = bytes.fromhex(chunk_hex)
        if cid not in self.where:
            raise IntegrityError("missing", f"chunk {chunk_hex} is in no index")
        pack, e = self.where[cid]
        ph = pack.hex()
        try:
            with open(os.path.join(self.repo, "packs", ph[:2], ph), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise IntegrityError("missing", f"pack {ph} is missing")
        header = data[:44]
        if len(header) < 44 or header[:8] != b"COFFERPK" or header[8] != 1 or header[9] != 0 or header[10:12] != b"\x00\x00":
            raise IntegrityError("pack", f"pack {ph} has no format 2 pack header")
        kind, comp = e[32], e[33]
        offset, stored_len, raw_len = (int.from_bytes(e[i:i + 4], "big") for i in (36, 40, 44))
        blob_key = hkdf_sha256(header[12:44], self.pack_key, b"coffer/v2/pack-blob-key")
        nonce_ = b"\x00" * 4 + offset.to_bytes(8, "big")
        try:
            stored = AESGCM(blob_key).decrypt(nonce_, data[offset:offset + stored_len], header + bytes([kind, comp]) + cid)
        except InvalidTag:
            raise IntegrityError("authentication", f"chunk {chunk_hex} in pack {ph} does not authenticate")
        plain = unzstd(stored) if comp == 1 else stored
        if comp not in (0, 1) or len(plain) != raw_len:
            raise IntegrityError("pack", f"chunk {chunk_hex}: bad compression or length")
        if blake3.blake3(plain, key=self.id_key).digest() != cid:
            raise IntegrityError("checksum", f"chunk {chunk_hex}: bytes do not match the id")
        return plain


def list_lines(text):
    """§20: JSON lines, a file's `more` lines joined to it."""
    if text and not text.endswith("\n"):
        raise IntegrityError("index", "the file list does not end with a newline")
    out = []
    pending = None
    for line in text.split("\n")[:-1] if text else []:
        v = json.loads(line)
        if pending is not None:
            if v.get("type") != "more":
                raise IntegrityError("index", f"more chunks of {pending['path']!r} were to follow")
            pending["chunks"] += v["chunks"]
            if not v.get("more"):
                pending.pop("more", None)
                out.append(pending)
                pending = None
            continue
        if v.get("more"):
            pending = v
        else:
            out.append(v)
    if pending is not None:
        raise IntegrityError("index", "the file list ends where more chunks were to follow")
    return out


def read_source_v2(chunks, m, src):
    """§22: the list from its chunks, then each stored file from its chunks."""
    ref = src["list"]
    text = b"".join(chunks.read(c) for c in ref["chunks"])
    if len(text) != ref["size"] or hashlib.sha256(text).hexdigest() != ref["sha256"]:
        raise IntegrityError("checksum", f"source {src['name']}: the file list differs from the manifest")
    lines = list_lines(text.decode("utf-8"))
    stored = [e for e in lines if e["stored"]]
    unstored = [e for e in lines if not e["stored"]]
    entries = []
    by_path = {}
    files = 0
    for e in stored:
        path = e["path"]
        check_safe(path)
        body = b""
        if e["type"] == "file":
            files += 1
            if "chunks" not in e:
                raise IntegrityError("index", f"file {path!r} lists no chunks")
            body = b"".join(chunks.read(c) for c in e["chunks"])
            if len(body) != e["size"] or hashlib.sha256(body).hexdigest() != e.get("sha256"):
                raise IntegrityError("checksum", f"file {path!r} does not match its size/SHA-256")
        elif e["type"] == "hardlink":
            first = by_path.get(e.get("target"))
            if first is None or first["type"] != "file":
                raise IntegrityError("index", f"hard link {path!r} to {e.get('target')!r}, not an earlier file")
            if e["size"] != first["size"] or e.get("sha256") != first.get("sha256"):
                raise IntegrityError("index", f"hard link {path!r}: size/SHA-256 differ from {e['target']!r}")
        elif e["type"] not in ("dir", "symlink"):
            raise IntegrityError("index", f"{path!r} has type {e['type']!r}")
        by_path[path] = e
        entries.append((e, body, None))
    streams = None
    if src["type"] in DUMP_TYPES:
        # §20: one line per stream, its name the line's path.
        streams = [{"name": e["path"], "bytes": e["size"], "chunks": len(e["chunks"]), "sha256": e["sha256"]}
                   for e, _, _ in entries]
        if streams != src.get("details", {}).get("streams") or len(streams) != src["files"]:
            raise IntegrityError("manifest", f"streams {streams} differ from the manifest's")
    elif files != src["files"]:
        raise IntegrityError("manifest", f"{files} files in the list, the manifest records {src['files']}")
    return entries, unstored, streams


# ---------------------------------------------------------------- §11 a source


def read_source(repo, repo_id, master, m, src):
    """Verifies one source deeply; returns its stored index entries (in
    archive order) with each file's bytes, and the unstored entries."""
    ctx = context(repo_id, m["id"], src["name"])
    archive = unzstd(read_object(repo, src["archive"], master, "A", ctx))
    index_text = unzstd(read_object(repo, src["index"], master, "I", ctx)).decode("utf-8")
    if index_text and not index_text.endswith("\n"):
        raise IntegrityError("index", "the index does not end with a newline")
    lines = [json.loads(line) for line in index_text.split("\n")[:-1]] if index_text else []
    stored = [e for e in lines if e["stored"]]
    unstored = [e for e in lines if not e["stored"]]
    entries = []
    by_path = {}
    files = 0
    for k, (name, typeflag, link, mode, size, body, (uid, gid, mtime)) in enumerate(tar_entries(archive)):
        if typeflag not in TYPES:
            raise IntegrityError("archive", f"entry {name!r} has unexpected type {typeflag!r}")
        path = index_path(name)
        check_safe(path)
        if k >= len(stored):
            raise IntegrityError("index", f"the archive holds {path!r}, which the index does not list")
        e = stored[k]
        if e["path"] != path or e["type"] != TYPES[typeflag]:
            raise IntegrityError("index", f"archive entry {path!r} does not match index entry {e['path']!r}")
        if e["type"] == "file":
            files += 1
            if size != e["size"] or hashlib.sha256(body).hexdigest() != e.get("sha256"):
                raise IntegrityError("checksum", f"file {path!r} does not match its size/SHA-256")
        if e["type"] in ("symlink", "hardlink") and link != e.get("target"):
            raise IntegrityError("index", f"link {path!r}: archive and index targets differ")
        if e["type"] == "hardlink":
            # §8: a hard link repeats the size and SHA-256 of its target, an
            # earlier file entry of this index.
            first = by_path.get(e["target"])
            if first is None or first["type"] != "file":
                raise IntegrityError("index", f"hard link {path!r} to {e['target']!r}, not an earlier file")
            if e["size"] != first["size"] or e.get("sha256") != first.get("sha256"):
                raise IntegrityError("index", f"hard link {path!r}: size/SHA-256 differ from {e['target']!r}")
        by_path[path] = e
        entries.append((e, body, {"mode": mode, "uid": uid, "gid": gid, "mtime": mtime}))
    if len(entries) != len(stored):
        raise IntegrityError("index", f"the index lists {stored[len(entries)]['path']!r}, which the archive lacks")
    # §11 step 5: a dump source's `files` counts streams; its chunk entries
    # number the sum of details.streams[].chunks.
    streams = None
    if src["type"] in DUMP_TYPES:
        streams = dump_streams(src, entries)
        if files != sum(s["chunks"] for s in streams) or len(streams) != src["files"]:
            raise IntegrityError("manifest", f"{len(streams)} streams in the archive, the manifest records {src['files']}")
    elif files != src["files"]:
        raise IntegrityError("manifest", f"{files} files in the archive, the manifest records {src['files']}")
    return entries, unstored, streams


def extract_source(root, entries):
    """§11 step 6: writes the entries under root (which must not exist)."""
    os.makedirs(root)
    dirs = []
    written = set()
    for e, body, _tar in entries:
        path = e["path"]
        full = root if path == "." else os.path.join(root, *path.split("/"))
        # never write through a symlink: every parent must be a real directory
        parent = root
        for c in path.split("/")[:-1] if path != "." else []:
            parent = os.path.join(parent, c)
            if os.path.islink(parent) or (os.path.exists(parent) and not os.path.isdir(parent)):
                raise IntegrityError("unsafe-path", f"{path!r}: parent {c!r} is not a directory")
            if not os.path.exists(parent):
                os.mkdir(parent)
        t = e["type"]
        if t == "dir":
            if path != "." and not os.path.isdir(full):
                os.mkdir(full)
            dirs.append((full, e))
        elif t == "file":
            with open(full, "xb") as f:
                f.write(body)
            os.chmod(full, e["mode"] & 0o7777)
            ns = e["mtime"] * 10**9 + e.get("mtime_nsec", 0)
            os.utime(full, ns=(ns, ns))
            written.add(path)
        elif t == "symlink":
            os.symlink(e["target"], full)
        elif t == "hardlink":
            if e["target"] not in written:
                raise IntegrityError("unsafe-path", f"hard link {path!r} to {e['target']!r}, not an extracted file")
            os.link(os.path.join(root, *e["target"].split("/")), full)
    for full, e in reversed(dirs):  # deepest last-made first
        os.chmod(full, e["mode"] & 0o7777)
        ns = e["mtime"] * 10**9 + e.get("mtime_nsec", 0)
        os.utime(full, ns=(ns, ns))


# ---------------------------------------------------------------- commands


def snapshot_summary(m):
    return {
        "id": m["id"],
        "time": m["time"],
        "host": m["host"],
        "tags": m["tags"],
        "labels": m["labels"],
        "status": m["status"],
        "sources": [
            {"name": s["name"], "type": s["type"], "status": s["status"], "origin": s.get("origin")}
            for s in m["sources"]
        ],
    }


def read_repository(repo, key_file_key=None, passphrase=None, out=None):
    cfg, config_raw = read_config(repo)
    master = unlock(repo, cfg["id"], config_raw, key_file_key, passphrase)
    manifests = load_manifests(repo, cfg["id"], master, cfg["version"])
    chunks = Chunks(repo, cfg["id"], master) if cfg["version"] == 2 else None
    doc = {"repo_id": cfg["id"], "version": cfg["version"], "snapshots": []}
    for m in manifests:
        summary = snapshot_summary(m)
        if out is not None:
            for s, src in zip(summary["sources"], m["sources"]):
                if src["status"] != "ok":
                    continue
                if chunks is not None:
                    entries, unstored, streams = read_source_v2(chunks, m, src)
                else:
                    entries, unstored, streams = read_source(repo, cfg["id"], master, m, src)
                extract_source(os.path.join(out, m["id"], src["name"]), entries)
                s["files"] = src["files"]
                s["entries"] = [
                    dict({k: e[k] for k in ("path", "type", "size", "sha256", "target", "mode", "uid", "gid", "mtime", "mtime_nsec") if k in e}, tar=tar)
                    for e, _, tar in entries
                ]
                s["unstored"] = [{"path": e["path"], "error": e.get("error")} for e in unstored]
                if streams is not None:
                    s["streams"] = streams
        doc["snapshots"].append(summary)
    return doc, master


def cmd_list(a):
    doc, _ = read_repository(a.repo, key(a), a.passphrase)
    return doc


def cmd_extract(a):
    doc, _ = read_repository(a.repo, key(a), a.passphrase, out=a.out)
    return doc


def cmd_vectors(a):
    with open(os.path.join(a.vectors, "vectors.json"), "rb") as f:
        vec = json.loads(f.read())
    cfg, config_raw = read_config(a.repo)
    master = unlock(a.repo, cfg["id"], config_raw, key(a), None)
    failures = []
    checked = 0
    for v in vec["objects"]:
        checked += 1
        with open(os.path.join(a.vectors, v["file"]), "rb") as f:
            data = f.read()
        try:
            plain = open_sealed_bytes(data, master, v["open_as"], bytes.fromhex(v["context_hex"]))
            got = "ok"
        except IntegrityError as e:
            got, plain = e.category, None
        if got != v["expect"]:
            failures.append(f"{v['file']} ({v['what']}): expected {v['expect']}, got {got}")
        elif got == "ok" and plain.hex() != v["plaintext_hex"]:
            failures.append(f"{v['file']}: plaintext differs")
    for n, v in enumerate(vec["repository_damage"]):
        checked += 1
        # The object alone, without the manifest's size and SHA-256 check.
        with open(os.path.join(a.vectors, v["file"]), "rb") as f:
            data = f.read()
        try:
            open_sealed_bytes(data, master, v["open_as"], bytes.fromhex(v["context_hex"]))
            got = "ok"
        except IntegrityError as e:
            got = e.category
        if got != v["open_expect"]:
            failures.append(f"{v['file']} opened alone: expected {v['open_expect']}, got {got}")
        # The whole repository with the object in place must be rejected.
        work = os.path.join(a.scratch, f"damage-{n}")
        shutil.copytree(a.repo, os.path.join(work, "repo"))
        shutil.copyfile(os.path.join(a.vectors, v["file"]), os.path.join(work, "repo", *v["replaces"].split("/")))
        try:
            read_repository(os.path.join(work, "repo"), key(a), None, out=os.path.join(work, "out"))
            failures.append(f"{v['file']} ({v['what']}): the repository was read without error")
        except IntegrityError:
            pass
    creds = {"key_file": (key(a), None), "passphrase": (None, vec["passphrase"])}
    for n, v in enumerate(vec["repository_tamper"]):
        checked += 1
        # A changed key slot or config: the credentials must not open it.
        work = os.path.join(a.scratch, f"tamper-{n}")
        shutil.copytree(a.repo, os.path.join(work, "repo"))
        shutil.copyfile(os.path.join(a.vectors, v["file"]), os.path.join(work, "repo", *v["replaces"].split("/")))
        for c in v["credentials"]:
            try:
                read_repository(os.path.join(work, "repo"), *creds[c])
                got = "ok"
            except IntegrityError as e:
                got = e.category
            if got != v["expect"]:
                failures.append(f"{v['file']} ({v['what']}) with {c}: expected {v['expect']}, got {got}")
        if v.get("still_opens_with"):
            try:
                read_repository(os.path.join(work, "repo"), *creds[v["still_opens_with"]])
            except IntegrityError as e:
                failures.append(f"{v['file']}: the {v['still_opens_with']} slot must still open it: {e}")
    return {"master_key_hex": master.hex(), "checked": checked, "failures": failures}


def key(a):
    return read_key_file(a.key_file) if getattr(a, "key_file", None) else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("list", "extract", "vectors"):
        s = sub.add_parser(name)
        s.add_argument("--repo", required=True)
        s.add_argument("--key-file")
        if name != "vectors":
            s.add_argument("--passphrase")
        if name == "extract":
            s.add_argument("--out", required=True)
        if name == "vectors":
            s.add_argument("--vectors", required=True)
            s.add_argument("--scratch", required=True)
    a = p.parse_args()
    if not getattr(a, "key_file", None) and not getattr(a, "passphrase", None):
        p.error("give --key-file or --passphrase")
    try:
        doc = {"list": cmd_list, "extract": cmd_extract, "vectors": cmd_vectors}[a.cmd](a)
    except IntegrityError as e:
        print(f"integrity failure: {e}", file=sys.stderr)
        return 3
    json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
