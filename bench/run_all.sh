#!/usr/bin/env bash
# Every benchmark, one after the other (never in parallel: they measure a 2-core CPU).
# Results land in bench/results/*.json; the README's tables are copied from them.
# Roughly 80 minutes on an idle 2-core machine; pass stage names to run only some, e.g.
#   bash bench/run_all.sh kb voice
set -euo pipefail
cd "$(dirname "$0")/.."
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(kb excerpt llm chat voice talking_head finetune)
# kb builds its stores here and excerpt reads them (so "excerpt" needs "kb" before it in one run).
kbhome=$(mktemp -d "${TMPDIR:-/tmp}/zhiyin-kb-bench-XXXXXX")
trap 'rm -rf "$kbhome"' EXIT
for s in "${stages[@]}"; do
  echo "=== bench/${s}_bench.py" >&2
  extra=()
  [ "$s" = kb ] && extra=(--upgrade --home "$kbhome")  # the README's recall figures are after the e5 upgrade (+15 min)
  [ "$s" = excerpt ] && extra=(--home "$kbhome")
  python bench/"${s}"_bench.py "${extra[@]}"
done
