"""Hand-written SVG line charts of the delivery benchmark (no plotting library).

    python -m benchmarks.plot /tmp/bench.json docs/img     # from a `delivery --json` file

Two plots per workload: burst deliveries per second against N, and p99 latency at a fixed rate
against N; one line per stack, log-scaled x axis (and y axis for latency).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

COLORS = ["#222222", "#1f77b4", "#17becf", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
DASHES = ["", "", "6 3", "", "6 3", "", "", ""]
WIDTH, HEIGHT = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 80, 230, 40, 60  # margins; the legend sits on the right


def nice_ticks(low: float, high: float, log: bool) -> list[float]:
    if log:
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        return [10.0**e for e in range(first, last + 1)]
    span = high - low or 1.0
    step = 10 ** math.floor(math.log10(span / 5))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= 6:
            step *= factor
            break
    start = math.floor(low / step) * step
    return [start + i * step for i in range(int((high - start) / step) + 2)]


def label(value: float) -> str:
    if value >= 1000 and value % 100 == 0:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def line_chart(
    title: str,
    x_label: str,
    y_label: str,
    series: dict[str, list[tuple[float, float]]],
    log_y: bool = False,
) -> str:
    """An SVG document: one line per series, log-scaled x."""
    points = [p for line in series.values() for p in line if p[1] > 0 or not log_y]
    xs = [x for x, _ in points] or [1.0, 10.0]
    ys = [y for _, y in points] or [1.0, 10.0]
    x_ticks = sorted(set(xs))  # the values of N measured
    y_ticks = nice_ticks(min(ys) if log_y else 0.0, max(ys), log=log_y)
    x0, x1 = math.log10(x_ticks[0]) - 0.1, math.log10(x_ticks[-1]) + 0.1
    ty: Callable[[float], float] = math.log10 if log_y else float
    y0, y1 = ty(y_ticks[0]), ty(y_ticks[-1])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (math.log10(x) - x0) / ((x1 - x0) or 1) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (ty(y) - y0) / ((y1 - y0) or 1) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT + plot_w / 2}" y="22" text-anchor="middle" font-size="15"'
        f' font-weight="bold">{escape(title)}</text>',
    ]
    for t in x_ticks:
        x = px(t)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{label(t)}</text>'
        )
    for t in y_ticks:
        y = py(t)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label(t)}</text>')
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>'
    )
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 15}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    out.append(
        f'<text x="18" y="{TOP + plot_h / 2}" text-anchor="middle"'
        f' transform="rotate(-90 18 {TOP + plot_h / 2})">{escape(y_label)}</text>'
    )
    for i, (name, line) in enumerate(series.items()):
        color, dash = COLORS[i % len(COLORS)], DASHES[i % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        kept = sorted(p for p in line if p[1] > 0 or not log_y)
        if kept:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in kept)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"'
                f"{dash_attr}/>"
            )
            for x, y in kept:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
        ly = TOP + 10 + i * 22
        lx = LEFT + plot_w + 15
        out.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}"'
            f' stroke-width="2"{dash_attr}/>'
        )
        out.append(f'<text x="{lx + 30}" y="{ly + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def series(results: list[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> Any:
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        lines.setdefault(r["stack"], []).append((float(r["n"]), value(r)))
    return lines


def write_plots(
    results: list[dict[str, Any]], directory: Path, workload: str = "dashboard"
) -> list[Path]:
    """The plots of `workload`'s results in `directory`: bench-dashboard-deliveries.svg and
    bench-dashboard-p99.svg for the dashboard workload, bench-deliveries.svg and
    bench-p99.svg for the tick workload (so that one run does not overwrite the other's)."""
    directory.mkdir(parents=True, exist_ok=True)
    prefix = "bench-dashboard-" if workload == "dashboard" else "bench-"
    named = f" (the {workload} workload)"
    deliveries = directory / f"{prefix}deliveries.svg"
    deliveries.write_text(
        line_chart(
            "Burst: deliveries per second" + named,
            "N (connected clients, log scale)",
            "deliveries/s",
            series(results, lambda r: r["burst"]["per_second"]),
        )
    )
    p99 = directory / f"{prefix}p99.svg"
    p99.write_text(
        line_chart(
            "Fixed rate: p99 publish-to-receive latency" + named,
            "N (connected clients, log scale)",
            "p99 latency, ms (log scale)",
            series(results, lambda r: r["rate"]["p99_ms"]),
            log_y=True,
        )
    )
    return [deliveries, p99]


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    workload = data.get("workload", "dashboard")  # (files of earlier releases: the tick's)
    for written in write_plots(data["results"], Path(sys.argv[2]), workload):
        print(f"wrote {written}")
