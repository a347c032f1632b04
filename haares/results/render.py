"""A report as data (title, caption lines, sections), how its cells look, and its output formats.

Each section has a display frame (strings, what a reader sees: rich table, Markdown, LaTeX) and a
tidy frame of numbers (what a program reads: CSV, JSON). Formats: table, md, csv, latex, json.
Cells: the paper's method names, fixed-decimal numbers, incomplete-set flags, paper values, captions.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

import pandas as pd

from haares.errors import HaaresError

FORMATS = ("table", "md", "csv", "latex", "json")


@dataclass
class Section:
    """One table of a report: `frame` holds display strings (index = row labels), `data` numbers."""

    title: str
    frame: pd.DataFrame
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    """A rebuilt paper table: a title, caption lines (run settings, definitions) and sections."""

    title: str
    caption: list[str]
    sections: list[Section]


def render(report: Report, fmt: str) -> str:
    """The report as text in `fmt` (table renders with rich, without colour, for files and pipes)."""
    if fmt not in FORMATS:
        raise HaaresError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return {"table": to_rich_text, "md": to_markdown, "csv": to_csv, "latex": to_latex, "json": to_json}[fmt](report)


def to_rich_text(report: Report, *, width: int = 240) -> str:
    """Rich tables rendered to plain text at a width wide enough that no cell wraps."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(rich_report(report))
    return console.file.getvalue()


def rich_report(report: Report) -> object:
    """The report as one rich renderable (title, caption, a table and its notes per section); the CLI
    prints it (colour on a terminal), to_rich_text renders it to text. Prints nothing itself."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    # Cells are data, not markup: "[paper 1.7995]" would otherwise be read as a style tag and vanish.
    parts: list[object] = [f"[bold]{escape(report.title)}[/bold]"]
    parts += [Text(line) for line in report.caption]
    for section in report.sections:
        table = Table(title=escape(section.title) or None, title_justify="left", show_lines=False)
        table.add_column(escape(section.frame.index.name or ""), no_wrap=True)
        for column in section.frame.columns:
            table.add_column(escape(str(column)), justify="right")  # may wrap on a narrow terminal
        for label, row in section.frame.iterrows():
            table.add_row(escape(str(label)), *(escape(str(v)) for v in row))
        parts.append(table)
        parts += [Text(note) for note in section.notes]
    return Group(*parts)


def to_markdown(report: Report) -> str:
    """GitHub Markdown: a heading, the caption, then one pipe table per section."""
    out = [f"## {report.title}", ""]
    out += [f"{line}  " for line in report.caption] + [""]
    for section in report.sections:
        if section.title:
            out += [f"### {section.title}", ""]
        header = [section.frame.index.name or ""] + [str(c) for c in section.frame.columns]
        out.append("| " + " | ".join(_md(h) for h in header) + " |")
        out.append("| " + " | ".join(["---"] + ["---:"] * len(section.frame.columns)) + " |")
        for label, row in section.frame.iterrows():
            out.append("| " + " | ".join(_md(str(v)) for v in [label, *row]) + " |")
        out += [""] + [f"{note}  " for note in section.notes] + ([""] if section.notes else [])
    return "\n".join(out).rstrip() + "\n"


def to_csv(report: Report) -> str:
    """The tidy numbers of every section, stacked, with a leading `section` column."""
    frames = [s.data.assign(section=s.title)[["section", *s.data.columns]] for s in report.sections]
    return pd.concat(frames, ignore_index=True).to_csv(index=False) if frames else ""


def to_latex(report: Report) -> str:
    """One booktabs tabular per section, the caption lines as a LaTeX comment above."""
    out = [f"% {report.title}"] + [f"% {line}" for line in report.caption]
    for section in report.sections:
        n = len(section.frame.columns)
        out += ["", f"% {section.title}", "\\begin{tabular}{l" + "r" * n + "}", "\\toprule"]
        header = [section.frame.index.name or ""] + [str(c) for c in section.frame.columns]
        out.append(" & ".join(_tex(h) for h in header) + " \\\\")
        out.append("\\midrule")
        for label, row in section.frame.iterrows():
            out.append(" & ".join(_tex(str(v)) for v in [label, *row]) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"] + [f"% {note}" for note in section.notes]
    return "\n".join(out) + "\n"


def to_json(report: Report) -> str:
    """{"title", "caption", "sections": [{"title", "columns", "rows", "data", "notes"}]}; NaN is null."""
    sections = []
    for s in report.sections:
        rows = [{"label": str(label), **{str(k): v for k, v in row.items()}} for label, row in s.frame.iterrows()]
        sections.append({
            "title": s.title,
            "columns": [str(c) for c in s.frame.columns],
            "rows": rows,
            "data": [_clean(r) for r in s.data.to_dict(orient="records")],
            "notes": s.notes,
        })
    return json.dumps({"title": report.title, "caption": report.caption, "sections": sections}, indent=2) + "\n"


def _clean(record: dict) -> dict:
    """JSON-native values: numpy scalars to Python, NaN to None."""
    out = {}
    for key, value in record.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = None
        out[str(key)] = value
    return out


def _md(text: str) -> str:
    return text.replace("|", "\\|")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


# --- cells: method names, numbers, incomplete-set flags, paper values, caption lines --------------


METHOD_NAMES = {
    "standard": "Standard Residual", "rezero": "ReZero", "layerscale": "LayerScale",
    "block_attnres": "Block AttnRes", "haares": "HAARES", "haares_dup_b": "Dup. b",
    "haares_random_sign": "Random-sign detail", "haares_bias_0": "Fixed bias=0",
    "haares_bias_-2": "Fixed bias=-2", "haares_bias_-4": "Fixed bias=-4",
    "haares_no_rms": "HAARES w/o RMS matching",
    # The golf grid's techniques (docs/golf.md).
    "value_gate": "Value Residual + Gated Attn", "recurrent": "Depth recurrence",
    "unet": "U-Net skips", "golf_attnres": "Golf Block AttnRes", "muon": "Muon",
}
DASH = "—"


def name(method: str) -> str:
    """The paper's name for a method label."""
    return METHOD_NAMES.get(method, method)


def fmt(value: float, digits: int = 4, *, signed: bool = False) -> str:
    """A number with fixed decimals, or a dash for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def with_paper_value(text: str, stated: float | None, digits: int = 4, *, signed: bool = False) -> str:
    """`text` followed by `[paper x]` when the paper states a number for this cell."""
    return text if stated is None else f"{text} [paper {fmt(stated, digits, signed=signed)}]"


def incomplete(n: int, expected: int, unit: str) -> str:
    """'' for a complete set, else '* (n/expected unit)'."""
    return "" if n >= expected else f"* ({n}/{expected} {unit})"


def pairing_caption(runs: pd.DataFrame) -> str | None:
    """Whether every finished pair (same cell and seed) saw the same batches, by batch-order hash.

    None when no finished pair recorded a hash (e.g. runs from before hashes were recorded).
    """
    if "batch_order_hash" not in runs:
        return None
    done = runs[(runs["status"] == "succeeded") & runs["batch_order_hash"].notna()]
    sizes = done.groupby(["cell", "seed"]).size()
    pairs = sizes[sizes > 1].index
    if not len(pairs):
        return None
    distinct = done.groupby(["cell", "seed"])["batch_order_hash"].nunique()
    broken = [f"{cell + ' ' if cell else ''}seed {seed}" for cell, seed in pairs if distinct[(cell, seed)] > 1]
    if broken:
        return f"PAIRING BROKEN: runs of {', '.join(broken)} saw different batch orders; their deltas are not paired"
    return f"pairing checked: the {len(pairs)} finished pair(s) saw identical batch orders (batch-order hash)"


def settings_caption(runs: pd.DataFrame, superseded: int) -> list[str]:
    """Caption lines with the eval token cap, eval interval, precision and step budget of the runs."""

    def values(column: str, show) -> str:
        found = sorted({v for v in runs[column] if v is not None and not (isinstance(v, float) and math.isnan(v))}, key=str)
        return " / ".join(show(v) for v in found) if found else "unknown"

    tokens = values("eval_tokens", lambda v: "whole validation split" if int(v) == 0 else f"first {int(v):,} validation tokens")
    lines = [
        f"eval: {tokens}, every {values('eval_every', lambda v: f'{int(v):,}')} steps; "
        f"precision {values('precision', str)}; budget {values('budget_steps', lambda v: f'{int(v):,}')} steps",
    ]
    pairing = pairing_caption(runs)
    if pairing:
        lines.append(pairing)
    resumed = runs.loc[runs["attempts"].fillna(0) > 1, ["method", "seed"]]
    if len(resumed):
        which = ", ".join(f"{m} seed {s}" for m, s in resumed.itertuples(index=False))
        lines.append(f"resumed after an interruption (more than one attempt): {which}")
    if superseded:
        lines.append(f"{superseded} older run(s) with the same grid labels are left out (the newest job per label is shown)")
    return lines
