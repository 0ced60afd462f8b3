#!/usr/bin/env bash
# bench.sh [CORPUS_DIR]: time `coffer snapshot` and `coffer restore` of a
# corpus into a local repository, beside restic and borg on the same corpus in
# the same run; print MB/s, CPU seconds, peak RSS and coffer's ratios.
#
#   CORPUS_DIR  default /tmp/benchdata/corpus (e.g. made by the shared bench's
#               make-corpus.sh; any directory works)
#   REPS        rounds (default 3); in each round every tool runs once, the
#               tools interleaved (the order rotates by one each round)
#   WORK        scratch and results (default /tmp/benchdata/coffer-bench)
#   TOOLS       default "coffer restic borg", plus "db" when the database
#               BENCH_DB already exists; "db" alone runs only the database part
#               (no corpus needed)
#   DB_URL      PostgreSQL server of the db part (default
#               postgres://postgres@127.0.0.1:5432; password: PGPASSWORD/.pgpass)
#   BENCH_DB    its database (default benchdb; made with `pgbench -i -s
#               $PGBENCH_SCALE` when "db" is asked for and it is missing, scale 20)
#   COFFER      the binary (default target/release/coffer: cargo build --release)
#
# Each round, for each tool: fresh repository + init (untimed), sync, timed
# backup, sync, timed restore into an empty directory, in round 1 a check of
# the restore against the corpus (sha256 of every file; a mismatch aborts),
# then the repository and the restore are removed.
# restic: repo format v2, --compression auto; borg: repokey-blake2,
# zstd,3; coffer: its default zstd level 3. restic, borg and coffer all fsync
# their local repository files; no tool fsyncs a restore. The corpus is read
# (hashed) once before the first round, so backups read it from the page cache.
#
# Timing: GNU time around `bash -o pipefail -c CMD` (wall, user+sys CPU of the
# command and its children, peak RSS of the largest single process). Uses the
# shared harness ../shared/bench/lib.sh (relative to the repository) when it
# is there, else the small built-in equivalent below (BENCH_LIB=none forces it).
# Output: $WORK/results-<time>/{summary.md,runs.tsv,env.txt,log.txt,verify.tsv}
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# `coffer copy` against `rclone copy` lives in its own script (issue 4).
case " ${TOOLS:-} " in *" copy "*) exec bash "$ROOT/scripts/bench-copy.sh" "$@" ;; esac
# The nightly scenario of issue 13 (format 2 beside restic) lives in its own script.
case " ${TOOLS:-} " in *" nightly "*) exec bash "$ROOT/scripts/bench-nightly.sh" "$@" ;; esac
CORPUS=$(realpath -m "${1:-/tmp/benchdata/corpus}")
export WORK=${WORK:-/tmp/benchdata/coffer-bench}
export REPS=${REPS:-3}
DB_URL=${DB_URL:-postgres://postgres@127.0.0.1:5432}
BENCH_DB=${BENCH_DB:-benchdb}
PGBENCH_SCALE=${PGBENCH_SCALE:-20}
pg_q() { psql -XAtqw -d "$DB_URL/${2:-postgres}" -c "$1"; } # pg_q SQL [DB]
if [ -z "${TOOLS:-}" ]; then
	TOOLS="coffer restic borg"
	# the database part joins the default run only when its database is there
	if command -v psql >/dev/null 2>&1 && [ "$(pg_q "SELECT 1 FROM pg_database WHERE datname = '$BENCH_DB'" 2>/dev/null)" = 1 ]; then
		TOOLS="$TOOLS db"
	fi
fi
FILE_TOOLS=""
for t in $TOOLS; do [ "$t" = db ] || FILE_TOOLS="$FILE_TOOLS $t"; done
COFFER=${COFFER:-$ROOT/target/release/coffer}
LIB=${BENCH_LIB:-$ROOT/../shared/bench/lib.sh}

if [ -f "$LIB" ]; then
	# shellcheck source=/dev/null
	. "$LIB"
	HARNESS="shared $(realpath "$LIB")"
else
	HARNESS="built-in (scripts/bench.sh)"
	note() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
	die() { printf 'error: %s\n' "$*" >&2; exit 1; }
	need() { local c; for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "'$c' is not installed"; done; }
	# sha256 of every regular file, by path relative to the root given
	manifest() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum); }
	# timed LABEL ITER IN_BYTES CMD [OUT_PATH]: one run under GNU time after a
	# sync; appends label iter in_bytes wall user sys maxrss_kib rc out_bytes to $RUNS.
	timed() {
		local label=$1 iter=$2 in_bytes=$3 cmd=$4 out=${5:-} tf rc wall user sys rss ob=""
		tf=$(mktemp)
		sync
		printf '\n### %s [%s #%s] %s\n' "$(date +%H:%M:%S)" "$label" "$iter" "$cmd" >>"$LOG"
		/usr/bin/time -f '%e %U %S %M' -o "$tf" bash -o pipefail -c "$cmd" >>"$LOG" 2>&1
		rc=$?
		read -r wall user sys rss < <(tail -n1 "$tf") # first line may be "Command exited with ..."
		rm -f "$tf"
		if [ -n "$out" ] && [ -e "$out" ]; then ob=$(du -sb "$out" | cut -f1); fi
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$iter" "$in_bytes" "$wall" "$user" "$sys" "$rss" "$rc" "$ob" >>"$RUNS"
		printf '  %-16s #%s  %7ss wall  %6s MiB peak\n' "$label" "$iter" "$wall" "$((rss / 1024))" >&2
		[ "$rc" = 0 ] || note "FAILED (exit $rc): $label #$iter; see $LOG"
		return "$rc"
	}
fi

q() { printf '%q' "$1"; } # quote a path for the command strings run by bash -c
cpu_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8, $9}' /proc/stat; } # busy steal

need /usr/bin/time python3 sha256sum find du
[ -z "${FILE_TOOLS// /}" ] || [ -d "$CORPUS" ] || die "no corpus at $CORPUS (build one with make-corpus.sh, or pass a directory)"
case $REPS in '' | *[!0-9]* | 0) die "REPS must be a positive whole number, got '$REPS'" ;; esac
for t in $TOOLS; do
	case $t in
	coffer) [ -x "$COFFER" ] || die "no coffer binary at $COFFER: run 'cargo build --release' first (or set COFFER)" ;;
	restic | borg) need "$t" ;;
	db)
		[ -x "$COFFER" ] || die "no coffer binary at $COFFER: run 'cargo build --release' first (or set COFFER)"
		need psql pg_dump pg_restore
		;;
	*) die "unknown tool '$t' in TOOLS (coffer, restic, borg, db)" ;;
	esac
done
case $(realpath -m "$WORK")/ in "$ROOT"/*) die "WORK=$WORK is inside the repository; generated data goes elsewhere" ;; esac

PARENT=$(dirname "$CORPUS")
NAME=$(basename "$CORPUS")
IN=0 NFILES=0
if [ -n "${FILE_TOOLS// /}" ]; then
	IN=$(find "$CORPUS" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')
	NFILES=$(find "$CORPUS" -type f | wc -l)
fi
CACHE=$WORK/cache
REPOS=$WORK/repos
RESTORE=$WORK/restore
RES=$WORK/results-$(date +%Y%m%d-%H%M%S)
RUNS=$RES/runs.tsv
LOG=$RES/log.txt
CMDS=$RES/commands.tsv
MANIFEST=$CACHE/corpus.manifest
mkdir -p "$CACHE" "$REPOS" "$RESTORE" "$RES"
printf 'label\titer\tin_bytes\twall_s\tuser_s\tsys_s\tmaxrss_kib\trc\tout_bytes\n' >"$RUNS"
: >"$LOG"
: >"$CMDS"
export RES RUNS LOG CMDS

printf 'bench-not-secret\n' >"$CACHE/password"
export RESTIC_PASSWORD_FILE=$CACHE/password RESTIC_CACHE_DIR=$CACHE/restic
export BORG_PASSPHRASE=bench-not-secret BORG_BASE_DIR=$CACHE/borg BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
CCFG=$CACHE/coffer.toml
case " $TOOLS " in *" coffer "* | *" db "*)
	# a private copy, so that a rebuild of target/ during the run cannot mix binaries
	COFFER_BUILT=$(date -r "$COFFER" '+%Y-%m-%d %H:%M:%S')
	cp "$COFFER" "$CACHE/coffer.bin" || die "cannot copy $COFFER"
	COFFER=$CACHE/coffer.bin
	[ -s "$CACHE/coffer.key" ] || "$COFFER" key generate "$CACHE/coffer.key" >>"$LOG" 2>&1 || die "coffer key generate failed; see $LOG"
	cat >"$CCFG" <<-TOML
		[repository]
		url = "$REPOS/coffer"
		key_file = "$CACHE/coffer.key"

		[[sources]]
		name = "corpus"
		type = "directory"
		path = "$CORPUS"
	TOML
	;;
esac

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "host: $(nproc) cores (nproc), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r)"
	echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	[ -z "${FILE_TOOLS// /}" ] || echo "corpus: $CORPUS, $NFILES files, $(awk -v b="$IN" 'BEGIN{printf "%.1f", b/1e6}') MB"
	case " $TOOLS " in *" coffer "* | *" db "*)
		echo "coffer: $("$COFFER" --version 2>&1 | head -n1), binary built $COFFER_BUILT (sha256 $(sha256sum "$COFFER" | cut -c1-12)), work tree at run $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')" ;;
	esac
	case " $TOOLS " in *" restic "*) echo "restic: $(restic version | head -n1)" ;; esac
	case " $TOOLS " in *" borg "*) echo "borg: $(borg --version | head -n1)" ;; esac
	echo "reps: $REPS; tools: $TOOLS; timing harness: $HARNESS"
} >"$RES/env.txt"
cat "$RES/env.txt" >&2

if [ -n "${FILE_TOOLS// /}" ]; then
	note "reading and hashing the corpus once (warms the page cache)"
	manifest "$CORPUS" >"$MANIFEST" || die "could not hash the corpus"
fi

# ------------------------------------------------------------- database (db)
# Each round: bare `pg_dump -Fc` (its default zlib compression) and
# `pg_dump -Fc -Z0` (what coffer runs: coffer compresses with zstd) to
# /dev/null, and `coffer snapshot` of a postgres source on the same database
# (pg_dump's stream sealed into a fresh local repository, plus the row counts
# coffer takes in the dump's snapshot); then bare `CREATE DATABASE` +
# `pg_restore --single-transaction` of a `pg_dump -Fc` file made once before
# the rounds, and `coffer restore latest --to-database` into a new database
# (which also creates it, restores in one transaction and renames it into
# place). The order of the dump tools and of the restore tools rotates each
# round. Round 1 checks both restores against the database (per-table row
# counts and sum(abalance) of pgbench_accounts).
DREPO=$REPOS/coffer-db
DCFG=$CACHE/coffer-db.toml
DUMPFILE=$CACHE/$BENCH_DB.dump
DB_IN=0
db_prepare() {
	if [ "$(pg_q "SELECT 1 FROM pg_database WHERE datname = '$BENCH_DB'")" != 1 ]; then
		need pgbench
		note "creating $BENCH_DB: pgbench -i -s $PGBENCH_SCALE (once; about a minute at scale 20)"
		pg_q "CREATE DATABASE $BENCH_DB" >>"$LOG" 2>&1 || die "cannot create $BENCH_DB on $DB_URL; see $LOG"
		pgbench -i -q -s "$PGBENCH_SCALE" "$DB_URL/$BENCH_DB" >>"$LOG" 2>&1 || die "pgbench -i failed; see $LOG"
		pg_q "VACUUM ANALYZE" "$BENCH_DB" >>"$LOG" 2>&1
	fi
	DB_IN=$(pg_q "SELECT pg_database_size('$BENCH_DB')")
	cat >"$DCFG" <<-TOML
		[repository]
		url = "$DREPO"
		key_file = "$CACHE/coffer.key"

		[[sources]]
		name = "db"
		type = "postgres"
		url = "$DB_URL/$BENCH_DB"
	TOML
	note "making the pg_dump -Fc file for the bare pg_restore (not timed)"
	pg_dump -Fc -w -d "$DB_URL/$BENCH_DB" -f "$DUMPFILE" >>"$LOG" 2>&1 || die "pg_dump of $BENCH_DB failed; see $LOG"
}
db_fingerprint() { # per-table row counts and a balance sum, of database $1
	pg_q "SELECT string_agg(t || '=' || n, ' ' ORDER BY t) || ' abalance=' || (SELECT sum(abalance) FROM pgbench_accounts)
		FROM (SELECT 'accounts' t, count(*) n FROM pgbench_accounts UNION ALL SELECT 'branches', count(*) FROM pgbench_branches
		UNION ALL SELECT 'tellers', count(*) FROM pgbench_tellers UNION ALL SELECT 'history', count(*) FROM pgbench_history) c" "$1"
}
db_drop_restored() { pg_q "DROP DATABASE IF EXISTS coffer_bench_bare WITH (FORCE)" >>"$LOG" 2>&1; pg_q "DROP DATABASE IF EXISTS coffer_bench_coffer WITH (FORCE)" >>"$LOG" 2>&1; }
db_round() {
	local i=$1 C U want got
	C="$(q "$COFFER") --config $(q "$DCFG")"
	U=$(q "$DB_URL/$BENCH_DB")
	rm -rf "$DREPO"
	db_drop_restored
	bash -c "$C init" >>"$LOG" 2>&1 || die "coffer init (db) failed; see $LOG"
	local -a dumps=(
		"timed db/pg_dump $i $DB_IN $(q "pg_dump -Fc -w -d $U >/dev/null")"
		"timed db/pg_dump-Z0 $i $DB_IN $(q "pg_dump -Fc -Z0 -w -d $U >/dev/null")"
		"timed db/coffer-snapshot $i $DB_IN $(q "$C snapshot") $(q "$DREPO")"
	)
	local -a restores=(
		"timed db/pg_restore $i $DB_IN $(q "psql -XAtqw -d $(q "$DB_URL/postgres") -c 'CREATE DATABASE coffer_bench_bare' && pg_restore --exit-on-error --single-transaction -w -d $(q "$DB_URL/coffer_bench_bare") $(q "$DUMPFILE")")"
		"timed db/coffer-restore $i $DB_IN $(q "$C restore latest --to-database $(q "$DB_URL/coffer_bench_coffer")")"
	)
	local k n=${#dumps[@]}
	for k in $(seq 0 $((n - 1))); do eval "${dumps[$(((k + i - 1) % n))]}" || die "db dump step failed; see $LOG"; done
	n=${#restores[@]}
	for k in $(seq 0 $((n - 1))); do eval "${restores[$(((k + i - 1) % n))]}" || die "db restore step failed; see $LOG"; done
	if [ "$i" = 1 ]; then
		want=$(db_fingerprint "$BENCH_DB")
		for d in coffer_bench_bare coffer_bench_coffer; do
			got=$(db_fingerprint "$d")
			[ "$got" = "$want" ] || die "VERIFY FAILED: $d holds '$got', $BENCH_DB holds '$want'"
		done
		printf 'db\tok (both restores: %s)\n' "$want" >>"$RES/verify.tsv"
		note "verified: both restores hold what $BENCH_DB holds ($want)"
	fi
	db_drop_restored
	rm -rf "$DREPO"
}
case " $TOOLS " in *" db "*)
	db_prepare
	echo "postgres: $(pg_q "SHOW server_version"), $(pg_dump --version), database $BENCH_DB $(awk -v b="$DB_IN" 'BEGIN{printf "%.1f", b/1e6}') MB (pg_database_size), pg_dump -Fc file $(awk -v b="$(du -sb "$DUMPFILE" | cut -f1)" 'BEGIN{printf "%.1f", b/1e6}') MB" >>"$RES/env.txt"
	tail -n1 "$RES/env.txt" >&2
	;;
esac

# verify_restore TOOL DEST: the tree named like the corpus under DEST (the
# shallowest one) must hold exactly the corpus's files and bytes.
verify_restore() {
	local tool=$1 dest=$2 root
	root=$(find "$dest" -maxdepth 8 -type d -name "$NAME" -printf '%d %p\n' | sort -n | head -n1 | cut -d' ' -f2-)
	[ -n "$root" ] || die "VERIFY FAILED: $tool restored no '$NAME' directory under $dest"
	if ! cmp -s "$MANIFEST" <(manifest "$root"); then
		diff <(manifest "$root" 2>/dev/null) "$MANIFEST" | head -n 10 >&2
		printf '%s\tFAILED (%s differs)\n' "$tool" "$root" >>"$RES/verify.tsv"
		die "VERIFY FAILED: $tool's restore at $root differs from $CORPUS (kept for inspection)"
	fi
	printf '%s\tok (%s files identical)\n' "$tool" "$(wc -l <"$MANIFEST")" >>"$RES/verify.tsv"
	note "verified: $tool restored $(wc -l <"$MANIFEST") files byte-identical to the corpus"
}

# run_round TOOL ITER INIT BACKUP RESTORE REPO DEST: init untimed, then timed
# backup and restore (timed syncs first), verify in round 1, clean up.
run_round() {
	local t=$1 i=$2 init=$3 backup=$4 restore=$5 repo=$6 dest=$7
	rm -rf "$repo" "$dest" "$RESTIC_CACHE_DIR" "$BORG_BASE_DIR"
	mkdir -p "$dest"
	bash -c "$init" >>"$LOG" 2>&1 || die "$t: init failed; see $LOG"
	timed "$t/backup" "$i" "$IN" "$backup" "$repo" || die "$t backup failed; see $LOG"
	timed "$t/restore" "$i" "$IN" "$restore" "$dest" || die "$t restore failed; see $LOG"
	if [ "$i" = 1 ]; then verify_restore "$t" "$dest"; fi
	rm -rf "$repo" "$dest" "$RESTIC_CACHE_DIR" "$BORG_BASE_DIR"
}

round() {
	local t=$1 i=$2 R=$REPOS/$1 D=$RESTORE/$1 C
	C="$(q "$COFFER") --config $(q "$CCFG")"
	case $t in
	coffer) run_round coffer "$i" "$C init" "$C snapshot" "$C restore latest --target $(q "$D")" "$R" "$D" ;;
	restic) run_round restic "$i" "restic -r $(q "$R") init" \
		"cd $(q "$PARENT") && restic -r $(q "$R") backup --compression auto $(q "$NAME")" \
		"restic -r $(q "$R") restore latest --target $(q "$D")" "$R" "$D" ;;
	borg) run_round borg "$i" "borg init --encryption=repokey-blake2 $(q "$R")" \
		"cd $(q "$PARENT") && borg create --compression zstd,3 $(q "$R")::bench $(q "$NAME")" \
		"cd $(q "$D") && borg extract $(q "$R")::bench" "$R" "$D" ;;
	esac
}

read -r BUSY0 STEAL0 < <(cpu_jiffies)
T0=$(date +%s.%N)
read -ra T <<<"$FILE_TOOLS"
for i in $(seq 1 "$REPS"); do
	for k in "${!T[@]}"; do
		t=${T[$(((k + i - 1) % ${#T[@]}))]}
		note "round $i/$REPS: $t"
		round "$t" "$i"
	done
done
case " $TOOLS " in *" db "*)
	for i in $(seq 1 "$REPS"); do
		note "round $i/$REPS: db (PostgreSQL $BENCH_DB)"
		db_round "$i"
	done
	;;
esac
read -r BUSY1 STEAL1 < <(cpu_jiffies)
{
	echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
	awk -F'\t' -v busy="$((BUSY1 - BUSY0))" -v steal="$((STEAL1 - STEAL0))" -v hz="$(getconf CLK_TCK)" \
		-v t0="$T0" -v t1="$(date +%s.%N)" -v n="$(nproc)" '
		NR > 1 { c += $5 + $6 }
		END {
			cap = (t1 - t0) * n; if (cap <= 0) cap = 1
			printf "elapsed %.0f s on %d cores: timed commands used %.0f%% of the CPU, everything else %.0f%% (other users, untimed steps), steal %.1f%%\n",
				t1 - t0, n, 100 * c / cap, 100 * (busy / hz - c) / cap, 100 * steal / hz / cap }' "$RUNS"
} >>"$RES/env.txt"

python3 - "$RES" <<'PY' | tee "$RES/summary.md"
import csv, statistics, sys
res = sys.argv[1]
runs = {}
for r in csv.DictReader(open(f"{res}/runs.tsv"), delimiter="\t"):
    if r["rc"] == "0":
        runs.setdefault(r["label"], {})[r["iter"]] = r
med = statistics.median

def stats(label, key):
    vals = [key(r) for r in runs.get(label, {}).values()]
    return (med(vals), min(vals), max(vals)) if vals else None

wall = lambda r: float(r["wall_s"])
mbps = lambda r: int(r["in_bytes"]) / 1e6 / float(r["wall_s"])
cpu = lambda r: float(r["user_s"]) + float(r["sys_s"])
rss = lambda r: int(r["maxrss_kib"]) / 1024
out = lambda r: int(r["out_bytes"] or 0) / 1e6

def fmt(s, p=2, unit=""):
    return "-" if s is None else f"{s[0]:.{p}f}{unit} ({s[1]:.{p}f}-{s[2]:.{p}f})"

print("# coffer bench\n")
for line in open(f"{res}/env.txt"):
    print(f"- {line.rstrip()}")
print("\nMedians over the rounds, (min-max). MB = 10^6 bytes; MB/s = corpus bytes / wall"
      " seconds; CPU = user+sys of the command and its children; peak RSS = largest single"
      " process; repo MB = du -sb of the repository after the backup.")
tools = [t for t in ["coffer", "restic", "borg"] if f"{t}/backup" in runs]
for t in tools:
    print(f"\n## {t}\n")
    print("| step | wall s | MB/s | CPU s | peak RSS MiB | repo MB |")
    print("|---|---|---|---|---|---|")
    for step, name in (("backup", "snapshot" if t == "coffer" else "backup"), ("restore", "restore")):
        L = f"{t}/{step}"
        print(f"| {name} | {fmt(stats(L, wall))} | {fmt(stats(L, mbps), 0)} | {fmt(stats(L, cpu), 1)}"
              f" | {fmt(stats(L, rss), 0)} | {fmt(stats(L, out), 0) if step == 'backup' else '-'} |")

def ratio(step, peer, key):
    """per round: key(coffer) / key(peer), paired by round; median (min-max)"""
    a, b = runs.get(f"coffer/{step}", {}), runs.get(f"{peer}/{step}", {})
    rs = [key(a[i]) / key(b[i]) for i in a if i in b and key(b[i]) > 0]
    return (med(rs), min(rs), max(rs)) if rs else None

def verdict(s, ok):
    if not ok(s[0]):
        return " **NOT met**"
    return " **met**" + ("" if ok(s[1]) and ok(s[2]) else " (not in every round)")

if "coffer" in tools and len(tools) > 1:
    print("\n## Ratios, coffer vs peers (per round, then median (min-max))\n")
    print("Throughput ratio = coffer MB/s / peer MB/s (>1: coffer faster); RSS ratio ="
          " coffer peak RSS / peer's (<1: coffer smaller). Targets vs restic:"
          " snapshot >= 2.5x, restore >= 2x, lower peak RSS on both.\n")
    print("| | snapshot throughput | restore throughput | snapshot peak RSS | restore peak RSS |")
    print("|---|---|---|---|---|")
    for p in tools[1:]:
        cells = []
        for step, key, goal in (("backup", mbps, 2.5), ("restore", mbps, 2.0),
                                ("backup", rss, None), ("restore", rss, None)):
            s = ratio(step, p, key)
            ok = (lambda x, g=goal: x >= g) if goal else (lambda x: x < 1)
            cells.append(fmt(s, unit="x") + (verdict(s, ok) if p == "restic" and s else ""))
        print(f"| coffer vs {p} | " + " | ".join(cells) + " |")
PY
case " $TOOLS " in *" db "*)
	python3 - "$RES" <<'PY' | tee -a "$RES/summary.md"
import csv, statistics, sys
res = sys.argv[1]
runs = {}
for r in csv.DictReader(open(f"{res}/runs.tsv"), delimiter="\t"):
    if r["rc"] == "0" and r["label"].startswith("db/"):
        runs.setdefault(r["label"], {})[r["iter"]] = r
med = statistics.median
wall = lambda r: float(r["wall_s"])
cpu = lambda r: float(r["user_s"]) + float(r["sys_s"])
rss = lambda r: int(r["maxrss_kib"]) / 1024
def stats(label, key):
    vals = [key(r) for r in runs.get(label, {}).values()]
    return (med(vals), min(vals), max(vals)) if vals else None
def fmt(s, p=2, unit=""):
    return "-" if s is None else f"{s[0]:.{p}f}{unit} ({s[1]:.{p}f}-{s[2]:.{p}f})"
def ratio(a, b):
    x, y = runs.get(a, {}), runs.get(b, {})
    rs = [wall(x[i]) / wall(y[i]) for i in x if i in y and wall(y[i]) > 0]
    return (med(rs), min(rs), max(rs)) if rs else None
print("\n## PostgreSQL (db)\n")
print("Medians over the rounds, (min-max). CPU = user+sys of the command and its children"
      " (the server's backends are not included); peak RSS = largest single client process.\n")
print("| step | wall s | CPU s | peak RSS MiB | repo MB |")
print("|---|---|---|---|---|")
for label in ["db/pg_dump", "db/pg_dump-Z0", "db/coffer-snapshot", "db/pg_restore", "db/coffer-restore"]:
    out = stats(label, lambda r: int(r["out_bytes"] or 0) / 1e6) if label == "db/coffer-snapshot" else None
    print(f"| {label[3:]} | {fmt(stats(label, wall))} | {fmt(stats(label, cpu), 1)} | {fmt(stats(label, rss), 0)} | {fmt(out, 1) if out else '-'} |")
print("\nWall-time ratios, per round, then median (min-max); target: coffer snapshot <= 1.2x bare pg_dump.\n")
print("| ratio | wall |")
print("|---|---|")
s = ratio("db/coffer-snapshot", "db/pg_dump")
verdict = "" if s is None else (" **met**" if s[0] <= 1.2 else " **NOT met**")
print(f"| coffer snapshot / pg_dump -Fc | {fmt(s, unit='x')}{verdict} |")
print(f"| coffer snapshot / pg_dump -Fc -Z0 | {fmt(ratio('db/coffer-snapshot', 'db/pg_dump-Z0'), unit='x')} |")
print(f"| coffer restore --to-database / createdb + pg_restore | {fmt(ratio('db/coffer-restore', 'db/pg_restore'), unit='x')} |")
PY
	;;
esac
echo
echo "results: $RES" >&2
