#!/bin/bash
# alternate base/new runs of benchmarks.recent_items; print the "added" ratio lines
for i in 1 2; do
  for tree in /tmp/s43/base /work/main; do
    echo "== $tree"
    (cd $tree && RECSYS_FEATURE_STORE=/tmp/s43/fs /work/main/.venv/bin/python -m benchmarks.recent_items --n ${N:-600} 2>&1 | grep -E "no recent|10 recent")
  done
done
