#!/usr/bin/env bash
# Every benchmark, one after the other (never in parallel: they measure a 2-core CPU).
# Results land in bench/results/*.json; the README's tables are copied from them.
# Roughly 105 minutes on an idle 2-core machine (gemma: ~25 of them); pass stage names to run only some, e.g.
#   bash bench/run_all.sh kb voice
set -euo pipefail
cd "$(dirname "$0")/.."
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(kb gemma excerpt llm chat voice talking_head finetune)
# kb builds its stores here and excerpt reads them (so "excerpt" needs "kb" before it in one run).
kbhome=$(mktemp -d "${TMPDIR:-/tmp}/zhiyin-kb-bench-XXXXXX")
trap 'rm -rf "$kbhome"' EXIT
for s in "${stages[@]}"; do
  if [ "$s" = gemma ]; then  # the EmbeddingGemma upgrade (~25 min) in its own home, then the second look's with/without
    gemmahome="$kbhome/gemma"
    echo "=== bench/kb_bench.py --upgrade-to embeddinggemma, bench/kb_second_look.py, bench/kb_query_variants.py, bench/gemma_runtime.py" >&2
    python bench/kb_bench.py --upgrade --upgrade-to embeddinggemma --home "$gemmahome" --out bench/results/kb_gemma.json
    python bench/kb_second_look.py --home "$gemmahome"
    python bench/kb_query_variants.py --home "$gemmahome"
    python bench/gemma_runtime.py --home "$gemmahome"  # torch against ONNX Runtime (needs the export: gemma prepare)
    continue
  fi
  echo "=== bench/${s}_bench.py" >&2
  extra=()
  [ "$s" = kb ] && extra=(--upgrade --home "$kbhome")  # the README's recall figures are after the e5 upgrade (+15 min)
  [ "$s" = excerpt ] && extra=(--home "$kbhome")
  python bench/"${s}"_bench.py "${extra[@]}"
done
