"""The chart: cost per record (µs) against size (patients), one line per stage, log-log."""

from __future__ import annotations

from pathlib import Path

from bench.catalogue import SPECS
from bench.results import Results

# Derived views of the protect run (same seconds, other units) would only duplicate a line.
_LEFT_OUT = {"protect.tokens", "protect.vault"}


def draw(results: Results, path: Path) -> bool:
    """Write the PNG; False when no stage has figures at any size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results.sizes()
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=110)
    colors = plt.get_cmap("tab20").colors
    markers = "osD^vP*Xh<>p"
    drawn = 0
    for key, spec in SPECS.items():
        if spec.role != "stage" or key in _LEFT_OUT:
            continue
        points = [(s, results.summary(key, s)) for s in sizes]
        points = [(s, p.us_per_record) for s, p in points if p is not None and p.records]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        style = "--" if spec.sampled else "-"
        ax.plot(xs, ys, style, color=colors[drawn % len(colors)],
                marker=markers[drawn % len(markers)], label=f"{key} ({spec.unit})")  # fmt: skip
        drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("generated patients")
    ax.set_ylabel("cost per record (µs, median run)")
    ax.set_title("audience-hub: cost per record against size (flat = linear scaling;"
                 " dashed = fixed-size sample)")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
