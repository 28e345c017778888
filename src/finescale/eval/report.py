"""Static HTML reports for run directories: metrics, training curves, pipeline figures and the resolved config.

The page uses inline CSS, no JavaScript, and links images by relative path, so a run folder can be moved or zipped
with its report. All text taken from files is escaped; only :attr:`Section.html` is inserted as is.
"""

from __future__ import annotations

import html
import json
import logging
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from finescale.eval.curves import LOSS_PNG, LR_PNG, VAL_PNG, plot_training_curves

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
CURVE_TITLES = {LOSS_PNG: "Losses", VAL_PNG: "Validation metrics", LR_PNG: "Learning rate"}
INDEX_MAX_METRICS = 20
# Pixels an image may have and still sit beside another one at its own size: half of main's 1216-px content width,
# less the gap and the figure's padding and border.
HALF_WIDTH_PX = 580
EVAL_KEY = "eval"  # metrics.json's evaluations, {manifest: metrics} (engine/run.py writes them)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:24px 32px 48px}
h1{margin:0 0 4px;font-size:1.7em}
h2{margin:32px 0 12px;padding-bottom:4px;border-bottom:2px solid #d9dde4;font-size:1.25em}
.meta{color:#5b6475;font-size:.9em;margin:0}
.note{color:#8a5a00;font-size:.9em}
nav a{margin-right:14px}
a{color:#1f5fbf}
table.kv{border-collapse:collapse;background:#fff;font-size:.92em;min-width:360px}
table.kv td,table.kv th{padding:4px 12px;border-bottom:1px solid #e6e8ec}
table.kv th{text-align:left;background:#eef1f5;font-weight:600}
table.kv th.v{text-align:right;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
table.kv td.v{font-family:ui-monospace,Menlo,Consolas,monospace;text-align:right}
table.kv tr:nth-child(even){background:#f9fafb}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:16px;margin-top:12px}
figure{margin:0;background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:10px}
figure.wide{grid-column:1/-1}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.88em;color:#3d4556;margin-top:6px}
details{background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:8px 12px}
summary{cursor:pointer;font-weight:600}
pre{font-size:.85em;overflow-x:auto;margin:8px 0 0}
"""


@dataclass
class Figure:
    """An image file to show in a report section."""

    title: str
    path: Path
    caption: str = ""


@dataclass
class Section:
    """A report section: figures, an optional key/value table and optional trusted extra HTML."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    table: dict | None = None
    html: str = ""


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into ``{"a.b": value}``; empty mappings are kept as values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def format_value(v: Any) -> str:
    """Numbers to 4 significant digits (integers in full), ``None`` as an em dash, lists comma-joined."""
    if v is None:
        return "\u2014"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        x = float(v)
        return str(x) if not math.isfinite(x) else f"{x:.4g}"
    if isinstance(v, list | tuple):
        items = [format_value(x) for x in v[:8]]
        return "[" + ", ".join(items) + (", \u2026" if len(v) > 8 else "") + "]"
    return str(v)


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _locate(path: Path, base: Path) -> Path | None:
    """An existing file for ``path``: absolute, relative to ``base``, or relative to the working directory."""
    path = Path(path)
    for candidate in [path] if path.is_absolute() else [base / path, path]:
        if candidate.is_file():
            return candidate
    return None


def _href(target: Path, base: Path) -> str:
    """URL of ``target`` relative to the directory ``base`` (file URI where no relative path exists)."""
    try:
        rel = os.path.relpath(target.resolve(), base.resolve())
    except ValueError:
        return target.resolve().as_uri()
    return quote(Path(rel).as_posix())


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("report: cannot read %s: %s", path, e)
        return None
    return data if isinstance(data, dict) else {"value": data}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
    except OSError as e:
        log.warning("report: cannot read %s: %s", path, e)
        return None


def _plot_title(path: Path) -> str:
    return CURVE_TITLES.get(path.name) or path.stem.replace("_", " ")


def _csv_log(run_dir: Path) -> Path | None:
    csv_dir = run_dir / "logs" / "csv"
    direct = csv_dir / "metrics.csv"
    if direct.is_file():
        return direct
    versions = sorted(csv_dir.glob("*/metrics.csv"), key=lambda p: p.stat().st_mtime) if csv_dir.is_dir() else []
    return versions[-1] if versions else None


def _table_html(table: Mapping[str, Any], limit: int | None = None) -> str:
    rows = list(flatten(table).items())
    shown = rows if limit is None else rows[:limit]
    body = "".join(f'<tr><td>{_esc(k)}</td><td class="v">{_esc(format_value(v))}</td></tr>' for k, v in shown)
    more = f'<p class="meta">\u2026 {len(rows) - len(shown)} more</p>' if len(shown) < len(rows) else ""
    return f'<table class="kv">{body}</table>{more}' if rows else ""


def _evaluations_html(evaluations: Mapping[str, Any]) -> str:
    """One column per manifest evaluated, one row per metric (blank where an evaluation lacks it)."""
    columns = {str(name): flatten(m) if isinstance(m, Mapping) else {"value": m} for name, m in evaluations.items()}
    keys = list(dict.fromkeys(k for values in columns.values() for k in values))
    head = "<tr><th>metric</th>" + "".join(f'<th class="v">{_esc(name)}</th>' for name in columns) + "</tr>"
    rows = "".join(
        f"<tr><td>{_esc(k)}</td>"
        + "".join(f'<td class="v">{_esc(format_value(v[k])) if k in v else ""}</td>' for v in columns.values())
        + "</tr>"
        for k in keys
    )
    note = '<p class="meta">one column per manifest evaluated (<code>eval --json</code>)</p>'
    return f'{note}<table class="kv">{head}{rows}</table>'


def _metrics_sections(metrics: Mapping[str, Any], base: Path) -> list[str]:
    """metrics.json as tables: the training summary, the evaluations (by manifest) and any other keys apart."""
    from finescale.pipelines import is_run_key

    flat = {k: v for k, v in metrics.items() if k != EVAL_KEY}
    summary = {k: v for k, v in flat.items() if is_run_key(k)}
    other = {k: v for k, v in flat.items() if k not in summary}
    evaluations = metrics.get(EVAL_KEY)
    parts = [_section_html(Section("Training summary", table=summary), base) if summary else ""]
    if isinstance(evaluations, Mapping) and evaluations:
        parts.append(_section_html(Section("Test metrics", html=_evaluations_html(evaluations)), base))
    if other:
        parts.append(_section_html(Section("Metrics" if not summary else "Other metrics", table=other), base))
    return parts


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's header, None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _figures_html(figures: Iterable[Figure], base: Path, used: set[Path] | None = None) -> str:
    items, missing = [], []
    for fig in figures:
        found = _locate(Path(fig.path), base)
        if found is None:
            missing.append(f"{fig.title} ({fig.path})" if fig.title else str(fig.path))
            continue
        if used is not None:
            used.add(found.resolve())
        src = _esc(_href(found, base))
        caption = f"<b>{_esc(fig.title)}</b>" + (f" \u2014 {_esc(fig.caption)}" if fig.caption else "")
        size = png_size(found)
        # shown at its own pixel size (never enlarged, shrunk only on a narrow window): a figure wider than half the
        # page gets a row of its own, so its labels keep the size they were drawn at
        wide = ' class="wide"' if size and size[0] > HALF_WIDTH_PX else ""
        dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
        items.append(
            f'<figure{wide}><a href="{src}"><img src="{src}" alt="{_esc(fig.title)}"{dims} loading="lazy"></a>'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    out = f'<div class="figs">{"".join(items)}</div>' if items else ""
    if missing:
        out += f'<p class="note">missing figure files: {_esc(", ".join(missing))}</p>'
    return out


def _section_html(section: Section, base: Path, used: set[Path] | None = None, *, limit: int | None = None) -> str:
    body = ""
    if section.table:
        body += _table_html(section.table, limit)
    body += section.html
    body += _figures_html(section.figures, base, used)
    if not body:
        return ""
    return f'<section id="{_slug(section.title)}"><h2>{_esc(section.title)}</h2>{body}</section>'


def _page(title: str, subtitle: str, body: str) -> str:
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body><main>"
        f'<h1>{_esc(title)}</h1><p class="meta">{_esc(subtitle)} \u00b7 generated {_esc(stamp)}</p>\n'
        f"{body}\n</main></body></html>\n"
    )


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_report(run_dir: str | Path, *, title: str, sections: Sequence[Section] = ()) -> Path:
    """Write ``run_dir/report.html``: metrics.json's tables (training summary; test metrics, one column per
    manifest), training curves (rendered into ``plots/`` from the CSV log),
    the given sections, other PNGs found in ``plots/``, and config.yaml. Missing or unreadable inputs are skipped."""
    run_dir = Path(run_dir)
    parts: list[str] = []
    used: set[Path] = set()

    metrics = _read_json(run_dir / "metrics.json")
    if metrics:
        parts.extend(_metrics_sections(metrics, run_dir))

    csv_path = _csv_log(run_dir)
    if csv_path is not None:
        try:
            pngs = plot_training_curves(csv_path, run_dir / "plots")
        except Exception as e:  # a broken log must not cost the rest of the report
            log.warning("report: cannot plot %s: %s", csv_path, e)
            parts.append(f'<section><h2>Training curves</h2><p class="note">{_esc(f"cannot plot: {e}")}</p></section>')
        else:
            figures = [Figure(_plot_title(p), p) for p in pngs]
            parts.append(_section_html(Section("Training curves", figures=figures), run_dir, used))

    for section in sections:
        parts.append(_section_html(section, run_dir, used))

    plots_dir = run_dir / "plots"
    others = [p for p in sorted(plots_dir.glob("*.png")) if p.resolve() not in used] if plots_dir.is_dir() else []
    if others:
        figures = [Figure(_plot_title(p), p) for p in others]
        parts.append(_section_html(Section("Other plots", figures=figures), run_dir, used))

    config = _read_text(run_dir / "config.yaml")
    if config is not None:
        parts.append(
            '<section id="config"><h2>Config</h2><details><summary>config.yaml</summary>'
            f"<pre>{_esc(config)}</pre></details></section>"
        )

    body = "\n".join(p for p in parts if p) or '<p class="note">nothing to report: no metrics, logs or plots found</p>'
    return _write(run_dir / REPORT_NAME, _page(title, str(run_dir), body))


def write_index(
    out_dir: str | Path,
    *,
    title: str,
    runs: Mapping[str, str | Path],
    summary: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` linking several runs: per run its key metrics (``summary[name]``, else the first
    entries of its metrics.json), a relative link to its own report, and the PNGs of its ``plots/`` folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts: list[str] = []
    nav: list[str] = []
    for name, given in runs.items():
        run_dir = Path(given)
        if not run_dir.is_absolute() and not run_dir.is_dir() and (out_dir / run_dir).is_dir():
            run_dir = out_dir / run_dir
        anchor = _slug(f"run-{name}")
        nav.append(f'<a href="#{anchor}">{_esc(name)}</a>')
        body = ""
        report = run_dir / REPORT_NAME
        if report.is_file() and report.resolve() != (out_dir / REPORT_NAME).resolve():
            body += f'<p><a href="{_esc(_href(report, out_dir))}">full report \u2192</a></p>'
        elif not run_dir.is_dir():
            body += f'<p class="note">run directory not found: {_esc(run_dir)}</p>'
        else:
            body += '<p class="note">no report.html in this run</p>'
        if summary is not None and name in summary:
            body += _table_html(summary[name])
        else:
            metrics = _read_json(run_dir / "metrics.json")
            body += _table_html(metrics, INDEX_MAX_METRICS) if metrics else ""
        plots_dir = run_dir / "plots"
        if plots_dir.is_dir():
            figures = [Figure(_plot_title(p), p) for p in sorted(plots_dir.glob("*.png"))]
            body += _figures_html(figures, out_dir)
        parts.append(f'<section id="{anchor}"><h2>{_esc(name)}</h2>{body}</section>')
    header = f"<nav>{''.join(nav)}</nav>" if len(nav) > 1 else ""
    body = header + "\n".join(parts) if parts else '<p class="note">no runs</p>'
    return _write(out_dir / REPORT_NAME, _page(title, f"{len(runs)} run(s) in {out_dir}", body))
