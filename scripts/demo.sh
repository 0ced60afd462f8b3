#!/usr/bin/env bash
# coffer's demo: the main job on an embedded default, no servers needed.
# Snapshots fixtures/demo/ (a small media tree, an .env, a config file) into a
# fresh local repository with a freshly generated key, lists it, verifies it,
# restores it into a temporary directory and shows that the bytes match.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

echo "== building coffer"
cargo build --quiet
coffer="$root/target/debug/coffer"

work=$(mktemp -d /tmp/coffer-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

cat > coffer.toml <<TOML
[repository]
url = "$work/repo"
key_file = "$work/key"

[labels]
environment = "demo"

[[sources]]
name = "media"
type = "directory"
path = "$root/fixtures/demo/media"
exclude = ["*.tmp"]

[[sources]]
name = "env"
type = "files"
paths = ["$root/fixtures/demo/.env", "$root/fixtures/demo/config/settings.toml"]
TOML

run() { echo; echo "\$ coffer $*"; "$coffer" "$@"; }

run key generate "$work/key"
run init
run snapshot --tag demo --label version=1.0
run snapshots
run show latest --files
run verify --deep
run restore latest --target "$work/restored"

echo
echo "== comparing restored bytes with the originals"
diff -r "$root/fixtures/demo/media" "$work/restored/media"
diff "$root/fixtures/demo/.env" "$work/restored/env$root/fixtures/demo/.env"
diff "$root/fixtures/demo/config/settings.toml" "$work/restored/env$root/fixtures/demo/config/settings.toml"
echo "restored files are byte-identical to fixtures/demo"

echo
echo "\$ coffer dump latest media | tar -tvf -"
"$coffer" dump latest media | tar -tvf -
echo
echo "demo done (repository and restore in $work, removed on exit)"
