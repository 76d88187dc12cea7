#!/bin/bash
# start-to-ready of one worker at 138k users: the code before this session (worktree, old-format model) and now, alternating
export RECSYS_FEATURE_STORE=/tmp/s39/mid/fs RECSYS_REFRESH_SECONDS=0 RECSYS_WORKERS=1
one() { # dir bentoml_home port
  cd $1; export BENTOML_HOME=$2
  t0=$(date +%s.%N)
  /work/main/.venv/bin/bentoml serve service:Recommender --host 127.0.0.1 --port $3 > /tmp/s39/startcmp_$3.log 2>&1 &
  pid=$!
  until curl -sf http://127.0.0.1:$3/readyz >/dev/null; do sleep 0.2; if ! kill -0 $pid 2>/dev/null; then echo failed; return; fi; done
  t1=$(date +%s.%N); kill -TERM -- $pid; wait $pid 2>/dev/null
  echo "$(echo "$t1 - $t0" | bc)"
}
for i in 1 2 3; do
  echo "before $(one /tmp/s39/wt /tmp/s39/mid/bento 3701)"
  echo "now    $(one /work/main /tmp/s39/mid/bento2 3702)"
done
