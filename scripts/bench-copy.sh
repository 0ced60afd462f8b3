#!/usr/bin/env bash
# bench-copy.sh [CORPUS_DIR]: `coffer copy` beside `rclone copy` of the same
# corpus to the same kind of place in the same run (issue 4). Also reached as
# `TOOLS=copy scripts/bench.sh [CORPUS_DIR]`.
#
#   CORPUS_DIR  default /tmp/benchdata/corpus (make-corpus.sh of ../shared/bench)
#   REPS        rounds (default 3); the order of the two tools alternates
#   WORK        scratch and results (default /tmp/benchdata/coffer-bench-copy)
#   COFFER      the binary (default target/release/coffer)
#   MOTO        moto_server (default $HOME/.cache/coffer-test-venv/bin/moto_server)
#
# Cases: fs -> fs (into an empty directory) and fs -> S3 (a private moto on a
# free port, a fresh prefix per run). Each run is timed with GNU time (wall,
# CPU, peak RSS); the first fs -> fs copy of each tool is checked with
# sha256sum against the corpus. Output: $WORK/results-<time>/runs.tsv and a
# table on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORPUS=$(realpath -m "${1:-/tmp/benchdata/corpus}")
WORK=${WORK:-/tmp/benchdata/coffer-bench-copy}
REPS=${REPS:-3}
COFFER=${COFFER:-$ROOT/target/release/coffer}
MOTO=${MOTO:-$HOME/.cache/coffer-test-venv/bin/moto_server}

die() { echo "bench-copy: $*" >&2; exit 1; }
[ -d "$CORPUS" ] || die "no corpus at $CORPUS (NO_DB=1 bash ../shared/bench/make-corpus.sh $CORPUS 2048)"
[ -x "$COFFER" ] || die "no coffer binary at $COFFER: cargo build --release"
command -v rclone >/dev/null || die "rclone not installed (apt-get install rclone)"
[ -x "$MOTO" ] || die "no moto_server at $MOTO (bash scripts/test-servers.sh start installs it)"

RES=$WORK/results-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RES"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$MOTO" -H 127.0.0.1 -p "$PORT" >"$RES/moto.log" 2>&1 &
MOTO_PID=$!
trap 'kill $MOTO_PID 2>/dev/null; rm -rf "$WORK/dst"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.1; done
curl -sf -X PUT "http://127.0.0.1:$PORT/bench" >/dev/null || die "cannot create the bucket on moto"

S3OPTS=(--dst-opt "aws_endpoint=http://127.0.0.1:$PORT" --dst-opt aws_allow_http=true
	--dst-opt aws_region=us-east-1 --dst-opt aws_access_key_id=k --dst-opt aws_secret_access_key=s)
# rclone 1.60 cannot load AWS_CA_BUNDLE with its own transport (and needs none for http).
unset AWS_CA_BUNDLE
export RCLONE_CONFIG_BS3_TYPE=s3 RCLONE_CONFIG_BS3_PROVIDER=Other RCLONE_CONFIG_BS3_ACCESS_KEY_ID=k \
	RCLONE_CONFIG_BS3_SECRET_ACCESS_KEY=s RCLONE_CONFIG_BS3_ENDPOINT="http://127.0.0.1:$PORT" \
	RCLONE_CONFIG_BS3_REGION=us-east-1

BYTES=$(du -sb "$CORPUS" | cut -f1)
FILES=$(find "$CORPUS" -type f | wc -l)
(cd "$CORPUS" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$RES/corpus.sha256"
echo -e "case\ttool\tround\twall_s\tcpu_s\trss_kib" >"$RES/runs.tsv"

run() { # run CASE TOOL ROUND CMD...
	local c=$1 t=$2 r=$3
	shift 3
	sync
	/usr/bin/time -f "%e %U %S %M" -o "$RES/time.txt" "$@" >>"$RES/log.txt" 2>&1 || die "$c $t failed: see $RES/log.txt"
	read -r wall u s rss <"$RES/time.txt"
	echo -e "$c\t$t\t$r\t$wall\t$(echo "$u + $s" | bc)\t$rss" >>"$RES/runs.tsv"
}

for r in $(seq "$REPS"); do
	tools=(coffer rclone)
	[ $((r % 2)) = 0 ] && tools=(rclone coffer)
	for t in "${tools[@]}"; do
		rm -rf "$WORK/dst"
		mkdir -p "$WORK/dst"
		if [ "$t" = coffer ]; then
			run fs-fs coffer "$r" "$COFFER" -q copy "$CORPUS" "$WORK/dst/coffer"
			run fs-s3 coffer "$r" "$COFFER" -q copy "$CORPUS" "s3://bench/coffer-$r" "${S3OPTS[@]}"
		else
			run fs-fs rclone "$r" rclone copy "$CORPUS" "$WORK/dst/rclone"
			run fs-s3 rclone "$r" rclone copy "$CORPUS" "bs3:bench/rclone-$r"
		fi
		if [ "$r" = 1 ]; then
			(cd "$WORK/dst/$t" && sha256sum --quiet -c "$RES/corpus.sha256") || die "$t: copy differs from the corpus"
		fi
	done
done

echo "corpus: $CORPUS, $FILES files, $((BYTES / 1000000)) MB; coffer $("$COFFER" --version); $(rclone version | head -n1); reps $REPS"
python3 - "$RES/runs.tsv" "$BYTES" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
size = int(sys.argv[2])
print("| case | tool | MB/s (median) | wall s | CPU s | peak RSS MiB |")
print("|---|---|---|---|---|---|")
med = {}
for case in ("fs-fs", "fs-s3"):
    for tool in ("coffer", "rclone"):
        rs = [r for r in rows if r["case"] == case and r["tool"] == tool]
        w = statistics.median(float(r["wall_s"]) for r in rs)
        c = statistics.median(float(r["cpu_s"]) for r in rs)
        m = max(int(r["rss_kib"]) for r in rs) / 1024
        med[case, tool] = w
        print(f"| {case} | {tool} | {size / w / 1e6:.0f} | {w:.2f} | {c:.2f} | {m:.0f} |")
for case in ("fs-fs", "fs-s3"):
    print(f"\n{case}: coffer throughput / rclone = {med[case, 'rclone'] / med[case, 'coffer']:.2f}x")
PY
echo "results: $RES" >&2
