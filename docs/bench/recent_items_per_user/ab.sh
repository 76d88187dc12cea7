#!/bin/bash
# Alternate runs of benchmarks.recent_items from two trees over one feature store; print the "added" lines.
#   usage: ab.sh BEFORE_TREE FEATURE_STORE [AFTER_TREE]
# BEFORE_TREE: a work tree of the code before (git worktree add /tmp/before <commit>); FEATURE_STORE: the
# store `python -m train` wrote; AFTER_TREE: this repository by default. N requests per case (600).
set -euo pipefail
before=${1:?a work tree of the code before}
store=${2:?the feature store python -m train wrote}
after=${3:-$(cd "$(dirname "$0")/../../.." && pwd)}
python=${PYTHON:-$after/.venv/bin/python}
for _ in 1 2; do
  for tree in "$before" "$after"; do
    echo "== $tree"
    (cd "$tree" && RECSYS_FEATURE_STORE=$store "$python" -m benchmarks.recent_items --n "${N:-600}" 2>&1 |
      grep -E "no recent|10 recent")
  done
done
