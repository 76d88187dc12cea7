import collections, re, sys
def load(path):
    tot = collections.Counter(); n = 0
    for line in open(path):
        stack, _, c = line.rstrip().rpartition(" ")
        c = int(c)
        frames = stack.split(";")
        if not any("recommend (stages/pipeline.py" in f or "recommend (/work/main/stages/pipeline.py" in f for f in frames):
            continue
        n += c
        own = [f for f in frames if "(stages/" in f or "(features/" in f or "(serving/" in f]
        key = re.sub(r":\d+\)$", ")", own[-1]) if own else "?"
        key = key.replace("/work/main/", "")
        tot[key] += c
    return tot, n
a, na = load(sys.argv[1]); b, nb = load(sys.argv[2])
ms_a, ms_b = float(sys.argv[3]), float(sys.argv[4])
rows = []
for k in set(a) | set(b):
    ua = a[k] / na * ms_a * 1000; ub = b[k] / nb * ms_b * 1000
    rows.append((ub - ua, ua, ub, k))
for d, ua, ub, k in sorted(rows, reverse=True)[:30]:
    print(f"{ua:7.1f} {ub:7.1f} {d:+7.1f}  {k}")
print("sum", sum(r[0] for r in rows))
