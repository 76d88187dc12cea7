"""The 100M run's resident set over time, with the CLI's steps: docs/bench/training_cli_100m/rss.png.

    PYTHONPATH=. python docs/bench/training_cli_100m/plot_rss.py RSS_LOG CLI_OUTPUT

RSS_LOG: lines of ``HH:MM:SS kB``, sampled every 2 s with ``ps -o rss=`` while the run went; CLI_OUTPUT: the
run's own output, whose first lines carry its start (UTC) and whose stage lines say how long each took.
"""

import re
import sys
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(rss_log: str, cli_output: str) -> None:
    samples = [line.split() for line in Path(rss_log).read_text().splitlines() if len(line.split()) == 2]
    text = Path(cli_output).read_text()
    start = re.search(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z$", text, re.M)
    if start is None:
        raise SystemExit(f"{cli_output}: no start time (a line like 2026-12-07T12:12:24Z)")
    started = datetime.strptime(start.group(1), "%Y-%m-%dT%H:%M:%S")
    day = started.date()
    times = [datetime.combine(day, datetime.strptime(t, "%H:%M:%S").time()) for t, _ in samples]
    minutes = [(t - started).total_seconds() / 60 for t in times]
    gib = [int(kb) / 2**20 for _, kb in samples]
    fig, axis = plt.subplots(figsize=(10, 4))
    axis.plot(minutes, gib, linewidth=0.8)
    axis.axhline(20, color="red", linestyle="--", linewidth=0.8, label="issue 29's limit, 20 GiB")
    # Each step's end, from its "<step>: N s" line, on the run's own clock.
    elapsed = 0.0
    for name, seconds in re.findall(
        r"^  (load data|final ranker: trained on the latest cuts|secondary evaluation: "
        r"per-user split|save models and feature store): ([\d.]+)s",
        text,
        re.M,
    ):
        elapsed += float(seconds)
        axis.axvline(elapsed / 60, color="grey", linewidth=0.6)
        axis.text(elapsed / 60, 0.5, name.split(":")[0], rotation=90, fontsize=7, va="bottom")
    axis.set_xlabel("minutes since the run started")
    axis.set_ylabel("resident set, GiB")
    axis.set_title("python -m train on 100M synthetic interactions (--backtest-cuts 0)")
    axis.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(rss_log).with_name("rss.png"), dpi=110)
    print(f"{len(samples)} samples, peak {max(gib):.2f} GiB; wrote {Path(rss_log).with_name('rss.png')}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
