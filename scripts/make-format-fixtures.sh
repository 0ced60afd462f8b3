#!/usr/bin/env bash
# Regenerates the format fixtures: fixtures/repo-v1/ (a real repository made
# by the current coffer, its test KEY, the tree it holds and EXPECTED.json)
# and fixtures/vectors/ (sealed-object test vectors and damaged copies of the
# repository's objects).
#
#   bash scripts/make-format-fixtures.sh
#
# Run it only when the format changes on purpose (a new version): it makes a
# NEW repository (new key, ids and salts), so every committed byte changes,
# and the old fixture is what proves that old repositories still open.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIX="$ROOT/fixtures/repo-v1"
VEC="$ROOT/fixtures/vectors"
# A fixed working path: the directory source's origin and the files source's
# paths (absolute, kept in the archive) are recorded in the snapshot.
W=/tmp/coffer-repo-v1-fixture
PASSPHRASE="coffer repo-v1 test passphrase"

log() { echo "make-format-fixtures: $*" >&2; }

cd "$ROOT"
log "building coffer"
cargo build --quiet --bin coffer
COFFER="$ROOT/target/debug/coffer"

rm -rf "$W" "$FIX/repo" "$FIX/KEY" "$FIX/source" "$FIX/EXPECTED.json"
rm -f "$VEC"/*.sealed "$VEC"/fail_* "$VEC/vectors.json"
mkdir -p "$W" "$FIX" "$VEC"

# ---------------------------------------------------------------- the tree
# Committed under source/: what git can hold. Added in the working copy only:
# a hard link, an empty directory, modes git does not keep, fixed mtimes.
S="$FIX/source"
mkdir -p "$S/tree/docs" "$S/tree/data" "$S/tree/bin" "$S/tree/unicode" "$S/env"
LONGDIR="long-directory-name-long-directory-name-long-directory-name"
LONGFILE="and-a-file-name-that-makes-the-path-longer-than-one-hundred-bytes.txt"
mkdir -p "$S/tree/$LONGDIR"
printf 'coffer repo-v1 format fixture\n' >"$S/tree/README.txt"
printf '# Notes\n\nA tiny tree for the format fixture.\n' >"$S/tree/docs/notes.md"
for i in $(seq 1 200); do printf '%d,%d.%02d\n' "$i" "$((i * 7))" "$((i % 100))"; done >"$S/tree/data/numbers.csv"
python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)))' >"$S/tree/data/bytes.bin"
printf '#!/bin/sh\necho "hello from the fixture"\n' >"$S/tree/bin/run.sh"
chmod 0755 "$S/tree/bin/run.sh"
printf 'ü and 日本語\n' >"$S/tree/unicode/café-menü-日本語.txt"
printf 'a path of more than 100 bytes needs a PAX "path" record\n' >"$S/tree/$LONGDIR/$LONGFILE"
: >"$S/tree/empty.txt"
printf 'not really a private key\n' >"$S/tree/private.key"
ln -s docs/notes.md "$S/tree/latest"
ln -s "$LONGDIR/$LONGFILE" "$S/tree/long-link"
printf 'DATABASE_URL=postgres://app@127.0.0.1:5432/shop\nSECRET_KEY=not-a-real-secret\n' >"$S/env/app.env"
printf '[server]\nport = 8080\n' >"$S/env/settings.toml"

cp -a "$S/tree" "$W/tree"
cp -a "$S/env" "$W/env"
ln "$W/tree/README.txt" "$W/tree/hardlink.txt"
mkdir "$W/tree/empty-dir"
chmod 0600 "$W/tree/private.key"
chmod 0600 "$W/env/app.env"
chmod 0750 "$W/tree/bin"
python3 - "$W" <<'EOF'
# Fixed mtimes (with nanoseconds), deepest first so directories keep theirs.
import os, sys
w = sys.argv[1]
paths = []
for top in ("tree", "env"):
    for d, dirs, files in os.walk(os.path.join(w, top)):
        paths += [os.path.join(d, n) for n in dirs + files]
    paths.append(os.path.join(w, top))
for i, p in enumerate(sorted(paths, key=lambda p: (-p.count("/"), p))):
    t = 1767225600 + 3600 * (i % 24) + i
    os.utime(p, ns=(t * 10**9, t * 10**9 + (i * 123456789) % 10**9), follow_symlinks=False)
EOF

# ---------------------------------------------------------------- the repo
"$COFFER" key generate "$FIX/KEY"
chmod 0644 "$FIX/KEY" # a published test key; git keeps no 0600 anyway
cat >"$W/coffer.toml" <<EOF
[repository]
url = "$FIX/repo"
key_file = "$FIX/KEY"

[labels]
purpose = "format-fixture"

[[sources]]
name = "tree"
type = "directory"
path = "$W/tree"

[[sources]]
name = "env"
type = "files"
paths = ["$W/env/app.env", "$W/env/settings.toml"]
EOF
cd "$W"
"$COFFER" --config "$W/coffer.toml" init
printf '%s\n' "$PASSPHRASE" >"$W/passphrase"
"$COFFER" --config "$W/coffer.toml" key add --new-passphrase-file "$W/passphrase"
"$COFFER" --config "$W/coffer.toml" snapshot --json --tag fixture --label generator=make-format-fixtures >"$W/snapshot.json"
SNAP="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$W/snapshot.json")"
log "snapshot $SNAP"
"$COFFER" --config "$W/coffer.toml" show "$SNAP" --files --json >"$W/show.json"

# ---------------------------------------------------------------- EXPECTED.json
python3 - "$W" "$FIX" "$SNAP" "$PASSPHRASE" <<'EOF'
# Written from the working tree itself (not from coffer's index), in the
# order coffer's walk stores entries: depth first, names sorted bytewise.
import hashlib, json, os, stat, sys
w, fix, snap, passphrase = sys.argv[1:5]

def entry(full, rel, links):
    st = os.lstat(full)
    e = {"path": rel, "mode": stat.S_IMODE(st.st_mode)}
    if stat.S_ISLNK(st.st_mode):
        e.update(type="symlink", target=os.readlink(full))
    elif stat.S_ISDIR(st.st_mode):
        e.update(type="dir")
    else:
        key = (st.st_dev, st.st_ino)
        data = open(full, "rb").read()
        facts = dict(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        if st.st_nlink > 1 and key in links:
            # A hard link's index entry carries the size and SHA-256 of the
            # file it links to (its tar entry has no data).
            e.update(type="hardlink", target=links[key], **facts)
            return e
        if st.st_nlink > 1:
            links[key] = rel
        e.update(type="file", **facts,
                 mtime=st.st_mtime_ns // 10**9, mtime_nsec=st.st_mtime_ns % 10**9)
    return e

def walk(root, rel, links, out):
    full = root if rel == "." else os.path.join(root, rel)
    out.append(entry(full, rel, links))
    if os.path.isdir(full) and not os.path.islink(full):
        for name in sorted(os.listdir(full), key=os.fsencode):
            walk(root, name if rel == "." else rel + "/" + name, links, out)

tree = []
walk(os.path.join(w, "tree"), ".", {}, tree)
env = []
for n in ("app.env", "settings.toml"):
    p = os.path.join(w, "env", n)
    env.append(entry(p, p.lstrip("/"), {}))
repo_id = json.load(open(os.path.join(fix, "repo", "config")))["id"]
expected = {
    "comment": "What fixtures/repo-v1/repo holds; see README.md. Entries in archive order.",
    "repo_id": repo_id,
    "key_file": "KEY",
    "passphrase": passphrase,
    "snapshot": snap,
    "tags": ["fixture"],
    "labels": {"generator": "make-format-fixtures", "purpose": "format-fixture"},
    "sources": [
        {"name": "tree", "type": "directory", "origin": os.path.join(w, "tree"), "entries": tree},
        {"name": "env", "type": "files", "origin": "/", "entries": env},
    ],
}
# Cross-check against what coffer recorded.
show = json.load(open(os.path.join(w, "show.json")))
for src in expected["sources"]:
    rec = next(s for s in show["sources"] if s["name"] == src["name"])
    got = [(f["path"], f["type"], f.get("sha256"), f.get("target"),
            f["size"] if f["type"] in ("file", "hardlink") else None) for f in rec["files"]]
    want = [(e["path"], e["type"], e.get("sha256"), e.get("target"), e.get("size"))
            for e in src["entries"]]
    if got != want:
        sys.exit(f"coffer's index for {src['name']} differs from the tree:\n{got}\n{want}")
with open(os.path.join(fix, "EXPECTED.json"), "w") as f:
    json.dump(expected, f, indent=2, ensure_ascii=False)
    f.write("\n")
EOF

# ---------------------------------------------------------------- vectors
cd "$ROOT"
log "writing sealed-object vectors"
COFFER_WRITE_FIXTURES=1 cargo test --quiet --test it -- --ignored --exact format::generate_vectors >&2

log "checking (format_doc_quotes_the_constants fails until docs/FORMAT.md shows the new ids)"
cargo test --quiet --test it format:: >&2 || true
du -sh "$FIX" "$VEC" >&2
log "done; update the examples in docs/FORMAT.md (config, key slot and its AAD, manifest, index line) to the new ids and hashes, then commit"
