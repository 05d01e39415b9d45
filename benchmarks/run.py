"""Run the benchmark suite and publish it: Markdown tables and a PNG chart.

    python benchmarks/run.py --output docs/benchmarks.md [--endtoend] [--quick] [--frameworks ...]

The tables go to stdout and, with ``--output``, into that page's ``inprocess`` section
(``<!-- begin: inprocess -->`` ... ``<!-- end: inprocess -->``; the rest of the page is left
as it is), with the chart beside the page (same name, ``.png``). ``--endtoend`` adds the
server benchmarks (granian, uvicorn, wrk) and writes the page's ``endtoend`` section.
``--readme README.md`` also rewrites the README's short summary (``inprocess-summary``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import apps
from benchmarks.inprocess import (
    ENDPOINTS,
    ROUTING_SIZES,
    WS_BENCH,
    SuiteResult,
    add_arguments,
    config_from_args,
    run_suite,
)
from benchmarks.sections import check_section, provenance, write_section

# NOTE: spelled as escapes so the source stays plain ASCII for these two.
TIMES = "\u00d7"
DASH = "\u2013"
ENDPOINT_TITLES = {
    "plaintext": "plaintext",
    "json": "json",
    "users": "users (after 100 routes)",
    "echo": "echo",
    WS_BENCH: "ws message",
}
# PERFORMANCE.md: microasgi within this many times raw ASGI, best of rounds.
RAW_RATIO_TARGETS = {"plaintext": 2.5, "json": 2.5, "users": 3.0, "echo": 4.0, WS_BENCH: 1.5}
ROUTING_SCALE_TARGET = 1.1  # last of 1000 routes vs last of 10
CLOCK_TITLES = {"cpu": "process CPU time", "wall": "elapsed time"}
SUBJECT = "microasgi"
CHART_LABELS = {
    **ENDPOINT_TITLES,
    **{f"routing-{n}": f"last of {n} routes" for n in ROUTING_SIZES},
    "mw-bare": "bare app",
    "mw-http": "+ request/response middleware",
    "mw-asgi": "+ pure ASGI middleware",
}
FASTEST_PEER = "blacksheep"
MIDDLEWARE_LABELS = {
    "microasgi": ('`@app.middleware("http")`', "`app.add_middleware(M)`"),
    "starlette": ("`BaseHTTPMiddleware`", "pure ASGI class"),
}


# --------------------------------------------------------------------------- formatting


def fmt_us(value: float) -> str:
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}{TIMES}" if value < 10 else f"{value:.0f}{TIMES}"


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class Notes:
    """Errors met while measuring, listed under the tables instead of inside the cells."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return f"error [{self.items.index(text) + 1}]"


def table(header: list[str], rows: list[list[str]], align_first_left: bool = True) -> str:
    sep = ["---" if i == 0 and align_first_left else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def _cell_text(
    result: SuiteResult, loop: str, key: str, bench: str, notes: Notes, median: bool = False
) -> str:
    cell = result.cell(loop, key, bench)
    if cell is None:
        return DASH
    if cell.measurement is None:
        return notes.add(f"{result.frameworks[key].name} {bench} ({loop}): {cell.error}")
    value = cell.measurement.median if median else cell.measurement.best
    raw_cell = result.cell(loop, "raw", bench)
    if key == "raw" or raw_cell is None or raw_cell.measurement is None:
        return fmt_us(value)
    raw = raw_cell.measurement.median if median else raw_cell.measurement.best
    return f"{fmt_us(value)} ({fmt_ratio(value / raw)})"


def _unavailable_row(result: SuiteResult, key: str, width: int) -> list[str] | None:
    info = result.frameworks[key]
    if info.error is None:
        return None
    return [info.name, md_escape(info.error), *([DASH] * (width - 2))]


def _label(result: SuiteResult, key: str) -> str:
    info = result.frameworks[key]
    return f"{info.name} {info.version}".rstrip()


def endpoints_table(result: SuiteResult, loop: str, notes: Notes, median: bool) -> str:
    benches = [b for b in (*ENDPOINTS, WS_BENCH) if _any_cell(result, loop, b)]
    header = ["framework", *(ENDPOINT_TITLES[b] for b in benches)]
    rows = []
    for key in result.frameworks:
        missing = _unavailable_row(result, key, len(header))
        if missing is not None:
            rows.append(missing)
            continue
        row = [_label(result, key)]
        row += [_cell_text(result, loop, key, b, notes, median) for b in benches]
        rows.append(row)
    if SUBJECT in result.frameworks and not median:
        peer = apps.NAMES[FASTEST_PEER]
        goals = [f"*≤ {RAW_RATIO_TARGETS[b]:g}{TIMES} raw, < {peer}*" for b in benches]
        rows.append([f"*target for {SUBJECT}*", *goals])
    return table(header, rows)


def _any_cell(result: SuiteResult, loop: str, bench: str) -> bool:
    return any(bench in cells for cells in result.cells.get(loop, {}).values())


def routing_table(result: SuiteResult, loop: str, notes: Notes) -> str:
    header = ["framework", *(f"last of {n}" for n in ROUTING_SIZES), "1000 / 10"]
    rows = []
    for key in result.frameworks:
        missing = _unavailable_row(result, key, len(header))
        if missing is not None:
            rows.append(missing)
            continue
        row = [_label(result, key)]
        row += [_cell_text(result, loop, key, f"routing-{n}", notes) for n in ROUTING_SIZES]
        row.append(_scale_text(result, loop, key))
        rows.append(row)
    if SUBJECT in result.frameworks:
        rows.append([f"*target for {SUBJECT}*", "", "", "", f"*≤ {ROUTING_SCALE_TARGET:g}{TIMES}*"])
    return table(header, rows)


def _scale(result: SuiteResult, loop: str, key: str) -> float | None:
    small = result.best(loop, key, f"routing-{ROUTING_SIZES[0]}")
    large = result.best(loop, key, f"routing-{ROUTING_SIZES[-1]}")
    if small is None or large is None:
        return None
    return large / small


def _scale_text(result: SuiteResult, loop: str, key: str) -> str:
    scale = _scale(result, loop, key)
    return DASH if scale is None else fmt_ratio(scale)


def middleware_table(result: SuiteResult, loop: str, notes: Notes) -> str:
    header = [
        "framework",
        "bare",
        "+ request/response middleware",
        "+ pure ASGI middleware",
        "overhead: request/response",
        "overhead: pure ASGI",
    ]
    rows = []
    for key in apps.MIDDLEWARE_FRAMEWORKS:
        if key not in result.frameworks:
            continue
        missing = _unavailable_row(result, key, len(header))
        if missing is not None:
            rows.append(missing)
            continue
        http_label, asgi_label = MIDDLEWARE_LABELS[key]
        bare = result.best(loop, key, "mw-bare")
        row = [_label(result, key), _mw_cell(result, loop, key, "bare", notes)]
        row.append(f"{_mw_cell(result, loop, key, 'http', notes)} ({http_label})")
        row.append(f"{_mw_cell(result, loop, key, 'asgi', notes)} ({asgi_label})")
        for kind in ("http", "asgi"):
            value = result.best(loop, key, f"mw-{kind}")
            if bare is None or value is None:
                row.append(DASH)
            else:
                row.append(f"{value - bare:+.2f} µs ({fmt_ratio(value / bare)})")
        rows.append(row)
    return table(header, rows)


def _mw_cell(result: SuiteResult, loop: str, key: str, kind: str, notes: Notes) -> str:
    cell = result.cell(loop, key, f"mw-{kind}")
    if cell is None:
        return DASH
    if cell.measurement is None:
        return notes.add(f"{result.frameworks[key].name} middleware {kind} ({loop}): {cell.error}")
    return fmt_us(cell.measurement.best)


# --------------------------------------------------------------------------- targets


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**pass**" if ok else "**miss**")


def targets_table(result: SuiteResult) -> str:
    loops = list(result.cells)
    header = ["target (PERFORMANCE.md)", "goal"]
    for loop in loops:
        header += [f"{loop}: measured", "result"]
    rows: list[list[str]] = []

    def add(label: str, goal_text: str, measure: Any, goal: float, strict: bool = False) -> None:
        row = [label, goal_text]
        for loop in loops:
            value = measure(loop)
            ok = None if value is None else (value < goal if strict else value <= goal)
            row += [DASH if value is None else fmt_ratio(value), _verdict(ok)]
        rows.append(row)

    peer = apps.NAMES[FASTEST_PEER]
    for bench in (*ENDPOINTS, WS_BENCH):
        if not any(_any_cell(result, loop, bench) for loop in loops):
            continue  # not run (--sections)
        title = ENDPOINT_TITLES[bench]

        def vs_peer(loop: str, bench: str = bench) -> float | None:
            ours, theirs = result.best(loop, SUBJECT, bench), result.best(loop, FASTEST_PEER, bench)
            return None if ours is None or theirs is None else ours / theirs

        def vs_raw(loop: str, bench: str = bench) -> float | None:
            ours, raw = result.best(loop, SUBJECT, bench), result.best(loop, "raw", bench)
            return None if ours is None or raw is None else ours / raw

        add(f"{title}: faster than {peer}", f"< 1{TIMES} {peer}'s time", vs_peer, 1.0, strict=True)
        goal = RAW_RATIO_TARGETS[bench]
        add(f"{title}: close to raw ASGI", f"≤ {goal:g}{TIMES} raw", vs_raw, goal)
    if not any(_any_cell(result, loop, "routing-10") for loop in loops):
        return table(header, rows)
    add(
        "routing: last of 1000 routes vs last of 10",
        f"≤ {ROUTING_SCALE_TARGET:g}{TIMES}",
        lambda loop: _scale(result, loop, SUBJECT),
        ROUTING_SCALE_TARGET,
    )
    return table(header, rows)


# --------------------------------------------------------------------------- report


def header_lines(result: SuiteResult, chart: str | None) -> list[str]:
    config = result.config
    versions = ", ".join(
        f"{info.name} {info.version}" for info in result.frameworks.values() if info.version
    )
    lines = [
        "## In process",
        "",
        f"{provenance('benchmarks/run.py')}; the suite took {result.seconds:.0f} s.",
        "",
        f"- Method: `await app(scope, receive, send)` in a tight loop; "
        f"best and median of {config.rounds} interleaved rounds of up to "
        f"{config.requests:,} requests (rounds of slow apps cut to about "
        f"{config.max_round_seconds:g} s); clock: {CLOCK_TITLES[config.clock]}; "
        "µs per request (per message for WebSocket), ratio to raw ASGI in parentheses",
        f"- Versions: {versions}",
    ]
    for loop, error in result.loops_unavailable.items():
        lines.append(f"- {loop}: {md_escape(error)}")
    if chart:
        lines += ["", chart]
    return lines


def render(result: SuiteResult, chart: str | None) -> str:
    """The in-process section: one heading, then a part per event loop and the targets."""
    notes = Notes()
    lines = header_lines(result, chart)
    sections = result.config.sections
    for loop in result.cells:
        lines += ["", f"### {loop}"]
        if "endpoints" in sections or "ws" in sections:
            lines += ["", "#### µs per request, best of rounds (ratio to raw ASGI)", ""]
            lines.append(endpoints_table(result, loop, notes, median=False))
            lines += ["", "#### µs per request, median of rounds (ratio to raw ASGI)", ""]
            lines.append(endpoints_table(result, loop, notes, median=True))
        if "routing" in sections:
            lines += ["", "#### Routing scale: the last of N parameterised routes (best, µs)", ""]
            lines.append(routing_table(result, loop, notes))
        if "middleware" in sections:
            lines += ["", "#### Middleware: one pass-through layer on /plaintext (best, µs)", ""]
            lines.append(middleware_table(result, loop, notes))
    if SUBJECT in result.frameworks and result.cells:
        lines += ["", "### Targets", ""]
        if result.frameworks[SUBJECT].error:
            lines += [f"{SUBJECT} {md_escape(result.frameworks[SUBJECT].error)}", ""]
        lines.append(targets_table(result))
    if notes.items:
        lines += ["", "### Errors", ""]
        lines += [f"{i}. {md_escape(text)}" for i, text in enumerate(notes.items, 1)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- README summary

SUMMARY_FRAMEWORKS = ("raw", SUBJECT, FASTEST_PEER, "falcon", "starlette")
SUMMARY_PEER = "starlette"


def _short_ratio(value: float) -> str:
    return f"{value:.1f}{TIMES}" if value < 10 else f"{value:.0f}{TIMES}"


def render_summary(result: SuiteResult) -> str:
    """The README's few lines: the first loop's endpoints, routing scale and middleware."""
    if not result.cells:
        return "No in-process figures: every event loop was unavailable.\n"
    loop = next(iter(result.cells))
    config = result.config
    benches = [b for b in (*ENDPOINTS, WS_BENCH) if _any_cell(result, loop, b)]
    titles = {**ENDPOINT_TITLES, WS_BENCH: "WebSocket message"}
    lines = [
        f"In process, on {platform.python_implementation()} "
        f"{'.'.join(platform.python_version_tuple()[:2])} and {loop}, best of "
        f"{config.rounds} rounds, µs per request (ratio to a hand-written raw ASGI app), "
        f"from one run on a {os.cpu_count()}-core machine:",
        "",
        "| | " + " | ".join(titles[b] for b in benches) + " |",
        "|---" + "|---:" * len(benches) + "|",
    ]
    for key in SUMMARY_FRAMEWORKS:
        info = result.frameworks.get(key)
        if info is None or info.error is not None:
            continue
        cells = [_summary_cell(result, loop, key, b) for b in benches]
        if key == SUBJECT:
            lines.append(f"| **{info.name}** | " + " | ".join(f"**{c}**" for c in cells) + " |")
        else:
            lines.append(f"| {info.name} | " + " | ".join(cells) + " |")
    sentences = [s for s in (_routing_sentence(result, loop), _mw_sentence(result, loop)) if s]
    if sentences:
        lines += ["", " ".join(sentences)]
    return "\n".join(lines) + "\n"


def _summary_cell(result: SuiteResult, loop: str, key: str, bench: str) -> str:
    value, raw = result.best(loop, key, bench), result.best(loop, "raw", bench)
    if value is None:
        return DASH
    if key == "raw" or raw is None:
        return fmt_us(value)
    return f"{fmt_us(value)} ({_short_ratio(value / raw)})"


def _routing_sentence(result: SuiteResult, loop: str) -> str | None:
    ours, peer = _scale(result, loop, SUBJECT), _scale(result, loop, SUMMARY_PEER)
    if ours is None:
        return None
    versus = "" if peer is None else f" ({apps.NAMES[SUMMARY_PEER]} {_short_ratio(peer)})"
    last, first = ROUTING_SIZES[-1], ROUTING_SIZES[0]
    return f"The last of {last} routes costs {ours:.2f}{TIMES} the last of {first}{versus}."


def _mw_overhead(result: SuiteResult, loop: str, key: str) -> float | None:
    bare, http = result.best(loop, key, "mw-bare"), result.best(loop, key, "mw-http")
    return None if bare is None or http is None else http - bare


def _mw_sentence(result: SuiteResult, loop: str) -> str | None:
    ours = _mw_overhead(result, loop, SUBJECT)
    if ours is None:
        return None
    peer = _mw_overhead(result, loop, SUMMARY_PEER)
    http_label = MIDDLEWARE_LABELS[SUBJECT][0]
    versus = ""
    if peer is not None:
        peer_label = MIDDLEWARE_LABELS[SUMMARY_PEER][0]
        versus = f" ({apps.NAMES[SUMMARY_PEER]}'s {peer_label}: {peer:.0f} µs)"
    return f"An {http_label} layer adds {ours:.2f} µs{versus}."


# --------------------------------------------------------------------------- chart


def plot(result: SuiteResult, path: Path) -> None:
    """Grouped bars (log scale): endpoints, routing scale and middleware, first loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loop = next(iter(result.cells))
    keys = [k for k in result.frameworks if result.frameworks[k].error is None]
    palette = plt.get_cmap("tab10")
    # NOTE: one colour per framework in every panel; raw ASGI grey, the subject in front.
    colors = {key: palette(i % 10) for i, key in enumerate(apps.FRAMEWORKS)}
    colors["raw"] = (0.55, 0.55, 0.55, 1.0)
    groups = [
        ("endpoints", [b for b in (*ENDPOINTS, WS_BENCH) if _any_cell(result, loop, b)], keys),
        ("routing scale", [f"routing-{n}" for n in ROUTING_SIZES], keys),
        ("middleware (/plaintext)", [f"mw-{k}" for k in apps.MIDDLEWARE_KINDS], keys),
    ]
    groups = [(t, b, k) for t, b, k in groups if any(_any_cell(result, loop, x) for x in b)]
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 4.2 * len(groups)), squeeze=False)
    for ax, (title, benches, frameworks) in zip(axes[:, 0], groups, strict=True):
        frameworks = [k for k in frameworks if any(result.best(loop, k, b) for b in benches)]
        width = 0.8 / max(1, len(frameworks))
        lowest = float("inf")
        for i, key in enumerate(frameworks):
            xs, ys = [], []
            for j, bench in enumerate(benches):
                value = result.best(loop, key, bench)
                if value is not None:
                    xs.append(j + (i - (len(frameworks) - 1) / 2) * width)
                    ys.append(value)
                    lowest = min(lowest, value)
            ax.bar(xs, ys, width, label=result.frameworks[key].name, color=colors[key])
        ax.set_xticks(range(len(benches)))
        ax.set_xticklabels([CHART_LABELS.get(b, b) for b in benches])
        ax.set_yscale("log")
        if lowest != float("inf"):
            # NOTE: room under the smallest bar, or a log axis starts right at its top.
            ax.set_ylim(bottom=lowest / 3)
        ax.set_ylabel("µs per request (log)")
        ax.set_title(f"In process, {loop}: {title} (best of rounds, lower is better)")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize="small", ncol=min(4, len(frameworks)))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the benchmarks; write Markdown and a chart.")
    parser.add_argument(
        "--output", type=Path, help="page whose inprocess (and endtoend) section to rewrite"
    )
    parser.add_argument("--readme", type=Path, help="README whose inprocess-summary to rewrite")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    parser.add_argument(
        "--endtoend", action="store_true", help="also run apps under granian/uvicorn with wrk"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    targets = [(args.readme, "inprocess-summary")] if args.readme else []
    if args.output is not None:
        targets.append((args.output, "inprocess"))
        if args.endtoend:
            targets.append((args.output, "endtoend"))
    for path, name in targets:  # a page without its markers fails now, not after the run
        check_section(path, name)
    config = config_from_args(args)
    result = run_suite(config)

    endtoend_markdown = None
    if args.endtoend:
        from benchmarks import endtoend

        endtoend_markdown = "\n".join(endtoend.run_and_render(config, quick=args.quick)) + "\n"

    chart_line = None
    if args.output is not None and result.cells:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        png = args.output.with_suffix(".png")
        try:
            plot(result, png)
        except Exception as exc:  # the table matters more than the picture
            chart_line = f"(chart unavailable: {md_escape(f'{type(exc).__name__}: {exc}')})"
        else:
            chart_line = f"![In-process benchmark chart]({png.name})"

    markdown = render(result, chart_line)
    print(markdown)
    if endtoend_markdown is not None:
        print(endtoend_markdown)
    if args.output is not None:
        write_section(args.output, "inprocess", markdown)
        if endtoend_markdown is not None:
            write_section(args.output, "endtoend", endtoend_markdown)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.readme is not None:
        write_section(args.readme, "inprocess-summary", render_summary(result))
        print(f"wrote {args.readme}", file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(result), indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
