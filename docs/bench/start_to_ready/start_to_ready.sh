#!/bin/bash
# Start to ready of one worker: launch `bentoml serve` to the first 200 from /readyz, three times.
# usage: bash docs/bench/start_to_ready/start_to_ready.sh BENTOML_HOME FEATURE_STORE PORT
export BENTOML_HOME=$1 RECSYS_FEATURE_STORE=$2 RECSYS_REFRESH_SECONDS=0 RECSYS_WORKERS=1
cd "$(dirname "$0")/../../.."
for i in 1 2 3; do
  t0=$(date +%s.%N)
  .venv/bin/bentoml serve service:Recommender --host 127.0.0.1 --port $3 > ${TMPDIR:-/tmp}/ready_$3.log 2>&1 &
  pid=$!
  until curl -sf http://127.0.0.1:$3/readyz >/dev/null; do sleep 0.2; if ! kill -0 $pid 2>/dev/null; then echo failed; break; fi; done
  t1=$(date +%s.%N); kill -TERM -- $pid; wait $pid 2>/dev/null
  echo "run $i: $(echo "$t1 - $t0" | bc) s"
done
