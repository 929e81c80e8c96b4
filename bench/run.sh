#!/usr/bin/env bash
# bench/run.sh - end-to-end throughput and memory of ckptbridge convert,
# measured against `cp -r` of the same source (see bench/README.md).
#
#   bench/run.sh [--sizes "0.5 1 2 4"] [--large] [--family F] [--max-memory SIZE]
#                [--repeat N] [--dir DIR] [--keep] [--build DIR]
#
# For each size (decimal GB of source tensors): generates a synthetic HF
# checkpoint once, then times, with caches equalised the same way before each
# step, `cp -r` of the source (the floor), `convert --to maxtext` with default
# flags, and `convert --to hf` of that output; prints wall time, ratio to cp,
# peak RSS and GB/s per size, and a linear fit of time against size. With
# --repeat N, the three steps run N times in turn and each cell is the median
# wall time (peak RSS: the highest), so that one noisy step does not decide
# a row.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/run.sh [options]
  --sizes "S ..."    source sizes in GB (10^9 bytes); default "0.5 1 2 4"
  --large            add 8 GB to the list
  --family F         llama (default), mixtral, qwen3moe, deepseek (FP8), gptoss (MXFP4)
  --max-memory SIZE  passed to both conversions (when this ckptbridge has the flag)
  --repeat N         run cp and both conversions N times in turn per size; the
                     table shows the median wall time and the highest peak RSS
                     (default 1)
  --dir DIR          where the work folder is made (default ${TMPDIR:-/tmp})
  --keep             keep the work folder (sources and outputs) instead of removing it
  --build DIR        build folder with bin/ckptbridge and bin/synth_checkpoint
                     (default build/release, as scripts/build.sh makes it)
EOF
}

repo=$(cd "$(dirname "$0")/.." && pwd)
sizes="0.5 1 2 4"
large=0
family=llama
max_memory=""
repeat=1
parent="${TMPDIR:-/tmp}"
keep=0
build="$repo/build/release"

die() {
  echo "bench/run.sh: $*" >&2
  exit 2
}
need_value() { [ $# -ge 2 ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) need_value "$@"; sizes="$2"; shift 2 ;;
    --large) large=1; shift ;;
    --family) need_value "$@"; family="$2"; shift 2 ;;
    --max-memory) need_value "$@"; max_memory="$2"; shift 2 ;;
    --repeat) need_value "$@"; repeat="$2"; shift 2 ;;
    --dir) need_value "$@"; parent="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --build) need_value "$@"; build="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
[ "$large" = 1 ] && sizes="$sizes 8"
for s in $sizes; do
  [[ "$s" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--sizes: '$s' is not a number of GB"
done
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || die "--repeat: '$repeat' is not a positive whole number"
case "$family" in
  llama | mixtral | qwen3moe) expand=1 ;;   # bf16 in, bf16 out
  deepseek) expand=2 ;;                     # FP8 in, bf16 out
  gptoss) expand=4 ;;                       # MXFP4 (4.25 bits) in, bf16 out
  *) die "--family must be llama, mixtral, qwen3moe, deepseek or gptoss, got '$family'" ;;
esac

ckb="$build/bin/ckptbridge"
synth="$build/bin/synth_checkpoint"
for b in "$ckb" "$synth"; do
  [ -x "$b" ] || die "$b not found; build it first (scripts/build.sh, see README.md)"
done

# GNU time reports peak RSS; Debian ships it as the package `time`.
if [ ! -x /usr/bin/time ]; then
  echo "bench/run.sh: /usr/bin/time is missing; installing the Debian package 'time'"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends time
fi

mm_args=()
mm_note="not given"
if [ -n "$max_memory" ]; then
  if "$ckb" convert --help 2>&1 | grep -q -- '--max-memory'; then
    mm_args=(--max-memory "$max_memory")
    mm_note="$max_memory"
  else
    mm_note="$max_memory requested, but this ckptbridge has no --max-memory: not passed"
  fi
fi

# The table. GB/s is source bytes (10^9) over wall time in every column, so the
# three rates compare directly.
table() {
  awk -v family="$family" -v caches="${cache_mode:-?}" '
  {
    n++; size[n] = $1; gb[n] = $2 / 1e9; cp[n] = $3; mt[n] = $4; hf[n] = $5
    rcp[n] = $6 / 1024; rmt[n] = $7 / 1024; rhf[n] = $8 / 1024
  }
  function fit(y, label,   i, sx, sy, sxx, sxy, d, slope, icpt, ss, sr, my) {
    if (n < 2) return
    for (i = 1; i <= n; i++) { sx += gb[i]; sy += y[i]; sxx += gb[i] * gb[i]; sxy += gb[i] * y[i] }
    d = n * sxx - sx * sx
    if (d == 0) return
    slope = (n * sxy - sx * sy) / d; icpt = (sy - slope * sx) / n; my = sy / n
    for (i = 1; i <= n; i++) { ss += (y[i] - my) ^ 2; sr += (y[i] - icpt - slope * gb[i]) ^ 2 }
    printf "  %-11s time = %.3f s/GB x size %s %.3f s   (R^2 %.4f; %.2f GB/s marginal)\n", label, slope,
      (icpt < 0 ? "-" : "+"), (icpt < 0 ? -icpt : icpt), (ss > 0 ? 1 - sr / ss : 1), (slope > 0 ? 1 / slope : 0)
  }
  END {
    printf "family %s, caches %s; GB = 10^9 bytes of source tensors; ratio = time / cp time\n\n", family, caches
    printf "| size GB | cp s | to-maxtext s (x cp) | to-hf s (x cp) | cp GB/s | to-maxtext GB/s | to-hf GB/s | peak RSS cp / to-maxtext / to-hf MiB |\n"
    printf "|--------:|-----:|--------------------:|---------------:|--------:|----------------:|-----------:|--------------------------------------|\n"
    for (i = 1; i <= n; i++) {
      printf "| %s (%.2f) | %.2f | %.2f (%.2fx) | %.2f (%.2fx) | %.2f | %.2f | %.2f | %.0f / %.0f / %.0f |\n",
        size[i], gb[i], cp[i], mt[i], mt[i] / cp[i], hf[i], hf[i] / cp[i],
        gb[i] / cp[i], gb[i] / mt[i], gb[i] / hf[i], rcp[i], rmt[i], rhf[i]
    }
    if (n >= 2) {
      printf "\nlinear fit of wall time against source GB (least squares):\n"
      fit(cp, "cp"); fit(mt, "to-maxtext"); fit(hf, "to-hf")
    }
  }'
}
# BENCH_TABLE_ONLY=1 formats rows from stdin (for checking the table itself).
[ "${BENCH_TABLE_ONLY:-0}" = 1 ] && { table; exit 0; }

mkdir -p "$parent"
work=$(mktemp -d "$parent/ckptbridge-bench.XXXXXX")
cleanup() {
  if [ "$keep" = 1 ]; then
    echo "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# Disk: the source, its copy (removed once timed), the MaxText output and the
# HF output of the largest size live together; with --keep, every size's.
need=$(awk -v sizes="$sizes" -v e="$expand" -v keep="$keep" 'BEGIN {
  n = split(sizes, s, " "); max = 0; sum = 0
  for (i = 1; i <= n; i++) { sum += s[i]; if (s[i] > max) max = s[i] }
  per = 2 + 2 * e
  printf "%.0f", (keep ? per * sum : per * max) * 1e9 * 1.05 + 256e6 }')
avail=$(df -B1 --output=avail "$work" | tail -1 | tr -d ' ')
if [ "$avail" -lt "$need" ]; then
  die "$(awk -v n="$need" -v a="$avail" -v d="$work" 'BEGIN {
    printf "not enough free disk in %s: need %.1f GB (source, its copy and both outputs of the largest size), have %.1f GB", d, n / 1e9, a / 1e9 }')"
fi

# Caches: dropped before every step when this user may, so every step reads
# its input from disk; otherwise every input is read once right before its
# step, so every step starts warm.
# BENCH_CACHES=warm asks for the second way even where dropping is allowed
# (a shared machine).
if [ "${BENCH_CACHES:-}" != warm ] && (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
  cache_mode=drop
  cache_note="dropped before every step (sync; echo 3 > /proc/sys/vm/drop_caches): inputs read from disk"
else
  cache_mode=warm
  cache_note="cannot drop caches here; every step's input pre-read (cat > /dev/null) so all steps start warm"
fi
prepare() {  # $1: the step's input folder
  sync -f "$work"
  if [ "$cache_mode" = drop ]; then
    echo 3 >/proc/sys/vm/drop_caches
  else
    find "$1" -type f -exec cat {} + >/dev/null
  fi
}

# Runs "$@" under GNU time; sets wall (s, from the clock), user, sys (s) and
# rss (KiB).
run_timed() {
  local name=$1
  shift
  local t0 t1
  t0=$(date +%s.%N)
  if ! /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.log" 2>&1; then
    echo "bench/run.sh: step $name failed: $*" >&2
    tail -20 "$work/$name.log" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/$name.time")
  user=$(awk -F': ' '/User time/ { print $2 }' "$work/$name.time")
  sys=$(awk -F': ' '/System time/ { print $2 }' "$work/$name.time")
}

load() { cut -d' ' -f1-3 /proc/loadavg; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
# The median of the arguments (the mean of the middle two for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
  print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# One step's line: its name, then what run_timed measured, the load when it
# started ($l), the size of its output folder $2 (none for ""), and which
# repetition it was ($tag).
report() {
  local out=""
  [ -n "$2" ] && out=$(du -sb "$2" | awk '{ printf "  out %.2f GB", $1 / 1e9 }')
  printf '  %-11s %8.2f s  user %6.2f s  sys %6.2f s  peak RSS %6s MiB  load %s%s%s\n' \
    "$1" "$wall" "$user" "$sys" "$(mib "$rss")" "$l" "$out" "$tag"
}

# One timed conversion of size $s, repetition $r: $1 the step's name, $2 its
# input folder (prepared first), $3 the SOURCE argument, $4 the destination
# (removed first); the rest are convert's flags (--max-memory is added).
convert_step() {
  local name=$1 input=$2 from=$3 out=$4
  shift 4
  rm -rf "$out"
  prepare "$input"
  l=$(load)
  run_timed "$name-$s-$r" "$ckb" convert "$@" "${mm_args[@]}" "$from" "$out"
  report "$name" "$out"
}

echo "ckptbridge bench: family $family, sizes $sizes GB"
echo "  binary      $ckb"
echo "  machine     $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr), load $(load)"
echo "  work dir    $work ($(df -h --output=source,fstype "$work" | tail -1 | tr -s ' '))"
echo "  caches      $cache_note"
echo "  max-memory  $mm_note"
echo "  repeat      $repeat (the table: median wall time, highest peak RSS)"
echo "  cp step     cp -r SRC DST && sync -f DST (convert syncs its output before renaming it into place)"
echo

rows=()
for s in $sizes; do
  src="$work/src-$s"
  t0=$(date +%s)
  "$synth" --family "$family" --size "${s}GB" --out "$src" | sed 's/^/  /'
  src_bytes=$(du -sb "$src" | cut -f1)
  echo "  generated in $(($(date +%s) - t0)) s"

  cp_walls=() mt_walls=() hf_walls=() cp_rss=0 mt_rss=0 hf_rss=0
  for ((r = 1; r <= repeat; r++)); do
    tag=""
    [ "$repeat" -gt 1 ] && tag=" ($r/$repeat)"

    prepare "$src"
    l=$(load)
    run_timed "cp-$s-$r" sh -c 'cp -r "$1" "$2" && sync -f "$2"' sh "$src" "$work/cp-$s"
    cp_walls+=("$wall") cp_rss=$(max "$cp_rss" "$rss")
    report cp ""
    rm -rf "$work/cp-$s"

    convert_step to-maxtext "$src" "$src" "$work/mt-$s" --to maxtext
    mt_walls+=("$wall") mt_rss=$(max "$mt_rss" "$rss")

    convert_step to-hf "$work/mt-$s" "$work/mt-$s/0/items" "$work/hf-$s" --to hf
    hf_walls+=("$wall") hf_rss=$(max "$hf_rss" "$rss")
  done
  cp_wall=$(median "${cp_walls[@]}") mt_wall=$(median "${mt_walls[@]}") hf_wall=$(median "${hf_walls[@]}")
  [ "$repeat" -gt 1 ] && printf '  median      cp %.2f s, to-maxtext %.2f s, to-hf %.2f s\n' \
    "$cp_wall" "$mt_wall" "$hf_wall"
  echo

  rows+=("$s $src_bytes $cp_wall $mt_wall $hf_wall $cp_rss $mt_rss $hf_rss")
  if [ "$keep" = 0 ]; then rm -rf "$src" "$work/mt-$s" "$work/hf-$s"; fi
done

printf '%s\n' "${rows[@]}" | table
