#!/usr/bin/env bash
# Every benchmark, one after the other (never in parallel: they measure a 2-core CPU).
# Results land in bench/results/*.json; the README's tables are copied from them.
# Roughly 80 minutes on an idle 2-core machine; pass stage names to run only some, e.g.
#   bash bench/run_all.sh kb voice
set -euo pipefail
cd "$(dirname "$0")/.."
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(kb llm chat voice talking_head finetune)
for s in "${stages[@]}"; do
  echo "=== bench/${s}_bench.py" >&2
  extra=()
  [ "$s" = kb ] && extra=(--upgrade)  # the README's recall figures are after the e5 upgrade (+15 min)
  python bench/"${s}"_bench.py "${extra[@]}"
done
