"""Draws the charts of a scripts/bench report from its CSV files (run by scripts/bench).

latency-<storage>-<target>.png: the latency distribution (CDF) of each engine, one panel per client count.
expiry.png: live users over time around a mass expiry, one panel per size.
sustained.png: the issuance rate of each sustained run, window by window.
"""
import csv
import glob
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"mayfly": "tab:green", "built-in": "tab:gray"}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def latency_charts(out):
    by_target = defaultdict(dict)
    for path in glob.glob(os.path.join(out, "latency-*-*.csv")):
        name = os.path.basename(path)[len("latency-"):-len(".csv")]
        target, clients = name.rsplit("-", 1)
        by_target[target][int(clients)] = rows(path)
    for target, runs in by_target.items():
        levels = sorted(runs)
        fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4), squeeze=False)
        for ax, clients in zip(axes[0], levels):
            per_engine = defaultdict(list)
            for r in runs[clients]:
                per_engine[r["engine"]].append(float(r["ms"]))
            for engine, values in sorted(per_engine.items()):
                values.sort()
                n = len(values)
                ax.plot(values, [(i + 1) / n for i in range(n)], label=engine,
                        color=COLORS.get(engine))
            ax.set_xscale("log")
            ax.set_title(f"{target}, {clients} client{'s' if clients > 1 else ''}")
            ax.set_xlabel("latency (ms, log)")
            ax.set_ylabel("fraction of requests")
            ax.grid(True, alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"latency-{target}.png"), dpi=100)
        plt.close(fig)


def expiry_chart(out):
    path = os.path.join(out, "expiry-curve.csv")
    if not os.path.exists(path):
        return
    curves = defaultdict(lambda: defaultdict(list))
    for r in rows(path):
        curves[int(r["count"])][r["engine"]].append(
            (float(r["t_after_last_deadline"]), int(r["live"])))
    sizes = sorted(curves)
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for engine, points in sorted(curves[size].items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], label=engine,
                    color=COLORS.get(engine))
        ax.axvline(0, color="tab:red", linestyle="--", linewidth=1, label="last deadline")
        ax.set_title(f"{size} credentials expiring")
        ax.set_xlabel("seconds after the last deadline")
        ax.set_ylabel("live users on PostgreSQL")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "expiry.png"), dpi=100)
    plt.close(fig)


def sustained_chart(out):
    path = os.path.join(out, "sustained.csv")
    if not os.path.exists(path):
        return
    runs = defaultdict(list)
    for r in rows(path):
        runs[(r["engine"], int(r["round"]))].append((float(r["t_end_s"]), float(r["rate"])))
    fig, ax = plt.subplots(figsize=(8, 4))
    for (engine, round_), points in sorted(runs.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], color=COLORS.get(engine),
                linestyle="-" if round_ == 0 else "--", label=f"{engine}, round {round_}")
    ax.set_title("sustained issuance, PostgreSQL, 8 clients")
    ax.set_xlabel("seconds into the run (end of each window)")
    ax.set_ylabel("credentials per second")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sustained.png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    out_dir = sys.argv[1]
    latency_charts(out_dir)
    expiry_chart(out_dir)
    sustained_chart(out_dir)
    print(f"charts: {out_dir}")
