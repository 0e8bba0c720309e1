#!/usr/bin/env python3
"""Draws the panels of a Grafana dashboard (deploy/grafana/errata.json) from
a Prometheus's answers to their queries, in the dashboard's own layout, to a
PNG. Used by scripts/dashboard-screenshot; needs matplotlib.

    dashboard-render.py --prometheus URL --dashboard FILE --start T0 --end T1 --out PNG
"""

import argparse
import json
import re
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLOURS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2",
           "#b877d9", "#705da0", "#37872d", "#fade2a", "#c4162a", "#1f60c4"]


def query_range(prometheus, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}") as response:
        body = json.load(response)
    if body["status"] != "success":
        raise SystemExit(f"Prometheus refused {expr}: {body}")
    return body["data"]["result"]


def substitute(expr, rate_interval):
    expr = expr.replace("$__rate_interval", rate_interval)
    # Every replica: the job and instance variables at "All".
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def legend(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt) or str(metric)


def formatter(unit):
    def fmt(value, _pos):
        if unit == "percentunit":
            return f"{value * 100:.0f}%"
        if unit == "s":
            return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.1f} s"
        if unit == "bytes":
            return f"{value / 1e6:.0f} MB"
        if unit in ("reqps", "ops"):
            return f"{value:.0f}/s" if abs(value) >= 10 else f"{value:.1f}/s"
        return f"{value:.2g}" if abs(value) < 10 else f"{value:.0f}"
    return FuncFormatter(fmt)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--dashboard", required=True)
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--end", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--step", default="2")
    parser.add_argument("--rate-interval", default="10s")
    args = parser.parse_args()
    dashboard = json.load(open(args.dashboard))
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.3  # inches per grid unit of height
    fig = plt.figure(figsize=(16, rows * unit_h + 0.6), facecolor=BACKGROUND)
    fig.suptitle(f"{dashboard['title']}: job=All, instance=All (real Prometheus, errata under load)",
                 color=TEXT, fontsize=13, x=0.01, ha="left", y=0.998)
    top = 0.6 / (rows * unit_h + 0.6)
    scale_y = (1 - top) / rows
    series_total = 0
    for panel in panels:
        g = panel["gridPos"]
        left, width = g["x"] / 24, g["w"] / 24
        bottom = 1 - top - (g["y"] + g["h"]) * scale_y
        if panel["type"] == "row":
            fig.text(0.005, bottom + g["h"] * scale_y / 2, panel["title"], color=TEXT,
                     fontsize=12, fontweight="bold", va="center")
            continue
        cell = g["h"] * scale_y
        ax = fig.add_axes([left + 0.035, bottom + cell * 0.12, width - 0.045, cell * 0.76],
                          facecolor=PANEL)
        ax.set_title(panel["title"], color=TEXT, fontsize=9, loc="left")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        n = 0
        for target in panel["targets"]:
            expr = substitute(target["expr"], args.rate_interval)
            for result in query_range(args.prometheus, expr, args.start, args.end, args.step):
                times = [float(t) - args.start for t, _ in result["values"]]
                values = [float(v) for _, v in result["values"]]
                ax.plot(times, values, lw=1.2, color=COLOURS[n % len(COLOURS)],
                        label=legend(target.get("legendFormat", ""), result["metric"])[:40])
                n += 1
        series_total += n
        if n == 0:
            ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize=6, loc="upper left", ncol=2, facecolor=PANEL, edgecolor=GRID,
                      labelcolor=TEXT, framealpha=0.7)
        ax.set_xlim(0, args.end - args.start)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(formatter(unit))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0f} s"))
        ax.tick_params(colors=TEXT, labelsize=7)
        ax.grid(color=GRID, lw=0.5)
        for spine in ax.spines.values():
            spine.set_color(GRID)
    fig.savefig(args.out, dpi=64, facecolor=BACKGROUND)
    print(f"dashboard-render: {series_total} series in "
          f"{sum(p['type'] != 'row' for p in panels)} panels -> {args.out}")


if __name__ == "__main__":
    main()
