#!/usr/bin/env bash
# bench-nightly.sh [CORPUS_DIR]: the nightly-backup scenario of issue 13,
# coffer (repository format 2) beside restic on the same data in one run.
# bench.sh runs it with TOOLS=nightly.
#
# For each tool in turn, on its own copy of the corpus (so both see the same
# changes):
#   1. first snapshot of the copy into a fresh local repository
#   2. second snapshot, nothing changed
#   3. 1 % of the files rewritten in place (every 100th file in name order,
#      same size, new bytes) and 20 new 1 MiB files; third snapshot
#   4. repository size after the three (du -sb)
#   5. restore of the latest snapshot into an empty directory (checked
#      against the copy in round 1: sha256 of every file)
#   6. prune to the latest snapshot (coffer: two prunes with --grace 0s,
#      mark then sweep; restic: forget --keep-last 1 --prune), and the
#      repository's size after it
# Each step is timed with GNU time (wall, user+sys CPU, peak RSS of the
# largest process) after a sync; the page cache holds the corpus.
#
#   CORPUS_DIR  default /tmp/benchdata/corpus (made by ../shared/bench/make-corpus.sh)
#   REPS        rounds (default 1); the tool order alternates each round
#   WORK        scratch and results (default /tmp/benchdata/coffer-nightly)
#   COFFER      the binary (default target/release/coffer)
# Output: $WORK/results-<time>/{runs.tsv,summary.md,log.txt}
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORPUS=$(realpath -m "${1:-/tmp/benchdata/corpus}")
WORK=${WORK:-/tmp/benchdata/coffer-nightly}
REPS=${REPS:-1}
COFFER=${COFFER:-$ROOT/target/release/coffer}

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
for c in /usr/bin/time restic python3 sha256sum; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' is not installed"
done
[ -d "$CORPUS" ] || die "no corpus at $CORPUS (make it with ../shared/bench/make-corpus.sh)"
[ -x "$COFFER" ] || die "no $COFFER (cargo build --release)"
case "$WORK" in "$ROOT"/*) die "WORK must be outside the work tree" ;; esac

OUT=$WORK/results-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
RUNS=$OUT/runs.tsv
LOG=$OUT/log.txt
printf 'tool\tround\tstep\twall_s\tcpu_s\tmaxrss_kib\tbytes\n' >"$RUNS"
CORPUS_BYTES=$(du -sb "$CORPUS" | cut -f1)

# timed TOOL ROUND STEP CMD: one run under GNU time, appended to runs.tsv.
timed() {
	local tool=$1 round=$2 step=$3 cmd=$4 tf rc wall user sys rss
	tf=$(mktemp)
	sync
	printf '\n### %s %s #%s %s\n%s\n' "$(date +%H:%M:%S)" "$tool" "$round" "$step" "$cmd" >>"$LOG"
	/usr/bin/time -f '%e %U %S %M' -o "$tf" bash -o pipefail -c "$cmd" >>"$LOG" 2>&1
	rc=$?
	read -r wall user sys rss < <(tail -n1 "$tf")
	rm -f "$tf"
	[ "$rc" = 0 ] || die "$tool $step failed (rc $rc); see $LOG"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t\n' "$tool" "$round" "$step" "$wall" \
		"$(python3 -c "print(round($user+$sys,2))")" "$rss" >>"$RUNS"
}

record_size() { # record_size TOOL ROUND REPO [STEP]
	printf '%s\t%s\t%s\t\t\t\t%s\n' "$1" "$2" "${4:-repo_size}" "$(du -sb "$3" | cut -f1)" >>"$RUNS"
}

# The night's changes: every 100th file (name order) rewritten in place with
# new bytes of the same size, and 20 new 1 MiB files. Deterministic.
churn() {
	python3 - "$1" <<'PY'
import os, random, sys
root = sys.argv[1]
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
rng = random.Random(1)
for p in files[::100]:
    n = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.write(rng.randbytes(n))
os.makedirs(os.path.join(root, "media/nightly-new"), exist_ok=True)
for i in range(20):
    with open(os.path.join(root, f"media/nightly-new/new-{i:02}.bin"), "wb") as f:
        f.write(rng.randbytes(1 << 20))
PY
}

check_restore() { # check_restore SRC RESTORED
	diff <(cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) \
		<(cd "$2" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) >/dev/null ||
		die "the restore of $1 differs from it"
}

run_tool() { # run_tool TOOL ROUND
	local tool=$1 round=$2 src=$WORK/src-$1 repo=$WORK/repo-$1 dst=$WORK/restore-$1
	rm -rf "$src" "$repo" "$dst" "$WORK/cache-$1"
	cp -a "$CORPUS" "$src"
	case $tool in
	coffer)
		"$COFFER" key generate "$WORK/coffer-key" >/dev/null 2>&1 || true
		cat >"$WORK/coffer.toml" <<TOML
[repository]
url = "$repo"
key_file = "$WORK/coffer-key"
[[sources]]
name = "corpus"
type = "directory"
path = "$src"
TOML
		local c="$COFFER --config $WORK/coffer.toml --no-progress"
		$c init --format 2 >>"$LOG" 2>&1 || die "coffer init failed"
		timed coffer "$round" 1_first "$c snapshot"
		timed coffer "$round" 2_unchanged "$c snapshot"
		churn "$src"
		timed coffer "$round" 3_churned "$c snapshot"
		record_size coffer "$round" "$repo"
		timed coffer "$round" 5_restore "$c restore latest --target $dst"
		[ "$round" = 1 ] && check_restore "$src" "$dst/corpus"
		# Forget all but the latest: coffer marks the unused packs, and a
		# second prune deletes them (here at once: --grace 0s).
		timed coffer "$round" 6_prune "$c prune --keep-last 1 --grace 0s && $c prune --keep-last 1 --grace 0s"
		record_size coffer "$round" "$repo" repo_pruned
		;;
	restic)
		export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$repo
		local r="restic --cache-dir $WORK/cache-restic"
		$r init --repository-version 2 >>"$LOG" 2>&1 || die "restic init failed"
		timed restic "$round" 1_first "$r backup --host bench --compression auto $src"
		timed restic "$round" 2_unchanged "$r backup --host bench --compression auto $src"
		churn "$src"
		timed restic "$round" 3_churned "$r backup --host bench --compression auto $src"
		record_size restic "$round" "$repo"
		timed restic "$round" 5_restore "$r restore latest --target $dst"
		[ "$round" = 1 ] && check_restore "$src" "$dst$src"
		timed restic "$round" 6_prune "$r forget --keep-last 1 --prune"
		record_size restic "$round" "$repo" repo_pruned
		;;
	esac
	rm -rf "$src" "$repo" "$dst" "$WORK/cache-$1" "$WORK/coffer-key"
}

{
	echo "corpus $CORPUS ($CORPUS_BYTES bytes), $REPS round(s)"
	"$COFFER" --version
	restic version
	nproc
} >"$OUT/env.txt" 2>&1
# Read the corpus once, so every step reads it from the page cache.
find "$CORPUS" -type f -print0 | xargs -0 cat >/dev/null

for round in $(seq 1 "$REPS"); do
	if [ $((round % 2)) = 1 ]; then order="coffer restic"; else order="restic coffer"; fi
	for t in $order; do
		printf '[%s] round %s: %s\n' "$(date +%H:%M:%S)" "$round" "$t" >&2
		run_tool "$t" "$round"
	done
done

python3 - "$RUNS" "$CORPUS_BYTES" >"$OUT/summary.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
corpus = int(sys.argv[2])
def med(tool, step, key):
    v = [float(r[key]) for r in rows if r["tool"] == tool and r["step"] == step and r[key]]
    return statistics.median(v) if v else None
steps = [("1_first", "first snapshot"), ("2_unchanged", "second, unchanged"),
         ("3_churned", "third, 1 % rewritten + 20 new"), ("5_restore", "restore latest"),
         ("6_prune", "prune to the latest")]
print("| step | coffer s | restic s | restic/coffer (speed) | coffer MiB/s | coffer peak RSS MiB | restic peak RSS MiB |")
print("|---|---|---|---|---|---|---|")
for step, name in steps:
    c, r = med("coffer", step, "wall_s"), med("restic", step, "wall_s")
    cr, rr = med("coffer", step, "maxrss_kib"), med("restic", step, "maxrss_kib")
    speed = f"{r / c:.2f}x" if c and r else "-"
    rate = f"{corpus / c / 2**20:.0f}" if c and step in ("1_first", "5_restore") else "-"
    print(f"| {name} | {c} | {r} | {speed} | {rate} | {cr and round(cr / 1024)} | {rr and round(rr / 1024)} |")
c, r = med("coffer", "repo_size", "bytes"), med("restic", "repo_size", "bytes")
print(f"| repository after three | {c and round(c / 2**20)} MiB | {r and round(r / 2**20)} MiB | coffer/restic size {c / r:.3f} | | | |")
c, r = med("coffer", "repo_pruned", "bytes"), med("restic", "repo_pruned", "bytes")
if c and r:
    print(f"| repository after the prune | {round(c / 2**20)} MiB | {round(r / 2**20)} MiB | coffer/restic size {c / r:.3f} | | | |")
PY
cat "$OUT/summary.md"
echo "results: $OUT"
