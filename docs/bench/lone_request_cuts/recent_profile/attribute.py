"""Where the added time goes, from two py-spy raw profiles: ``python attribute.py plain.txt recent.txt 0.655 0.853``.

Each sample inside ``recommend`` goes to its innermost frame from this project (stages/, features/, serving/);
a frame's share of the samples times the case's p50 (ms, from ``benchmarks.recent_items``) gives its
microseconds. Prints plain us, recent us, added us and the frame, largest addition first.
"""

import collections
import re
import sys
from pathlib import Path

OWN = ("(stages/", "(features/", "(serving/")


def load(path: str) -> tuple[collections.Counter, int]:
    by_frame: collections.Counter = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any("recommend (stages/pipeline.py" in f for f in frames):
            continue
        total += int(count)
        own = [f for f in frames if any(mark in f for mark in OWN)]
        by_frame[re.sub(r":\d+\)$", ")", own[-1]) if own else "?"] += int(count)
    return by_frame, total


plain, plain_total = load(sys.argv[1])
recent, recent_total = load(sys.argv[2])
plain_ms, recent_ms = float(sys.argv[3]), float(sys.argv[4])
rows = []
for frame in set(plain) | set(recent):
    before = plain[frame] / plain_total * plain_ms * 1000
    after = recent[frame] / recent_total * recent_ms * 1000
    rows.append((after - before, before, after, frame))
for added, before, after, frame in sorted(rows, reverse=True)[:30]:
    print(f"{before:7.1f} {after:7.1f} {added:+7.1f}  {frame}")
print("sum", round(sum(r[0] for r in rows), 1))
