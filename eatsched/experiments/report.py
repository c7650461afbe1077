"""``eat report DIR``: one Markdown and one HTML report of an ``eat evaluate`` folder, and the generated
section of ``docs/results.md`` (our tables beside the paper's, with the orderings)."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from .evaluate import METRICS, Cell, EvalSettings, Evaluation, markdown_table
from .paper_tables import PAPER_TABLES

BEGIN = "<!-- BEGIN GENERATED: eat report --results-md; do not edit by hand -->"
END = "<!-- END GENERATED -->"
ABLATION_BEGIN = "<!-- BEGIN GENERATED: eat report ABLATION_DIR --results-md; do not edit by hand -->"
ABLATION_END = "<!-- END GENERATED ABLATION -->"
PLOTS = (("efficiency.png", "Fig. 8: efficiency (mean quality / mean response in model s, higher is better)"),
         ("training.png", "Fig. 5: training curves against env steps"))
HIGHER_IS_BETTER = {"quality": True, "response": False, "reload": False, "decision_time": False, "efficiency": True}


def load_evaluation(run_dir: Path) -> Evaluation:
    """Rebuild an ``Evaluation`` from the files ``evaluate`` wrote."""
    run_dir = Path(run_dir)
    sfile = run_dir / "settings.json"
    if not sfile.is_file():
        raise FileNotFoundError(f"{run_dir} is not an `eat evaluate` folder (no settings.json)")
    s = json.loads(sfile.read_text())
    from ..core.config import EATConfig  # noqa: PLC0415

    settings = EvalSettings(grid=s["grid"], algos=tuple(s["algos"]), seeds=s["seeds"], seed0=s["seed0"],
                            jobs=s["jobs"], checkpoints=Path(s["checkpoints"]) if s["checkpoints"] else None,
                            base=EATConfig.from_dict(s["base_config"]),
                            cells=tuple((n, tuple(r)) for n, r in s["cells"]))
    records = {}
    for f in sorted((run_dir / "cells").glob("*.json")):
        rec = json.loads(f.read_text())
        cell = Cell(rec["algo"], int(rec["nodes"]), float(rec["rate"]))
        if cell.algo in settings.algos and (cell.nodes, cell.rate) in settings.columns() \
                and rec["seeds"] == settings.seeds and rec["seed0"] == settings.seed0:
            records[cell] = rec
    skipped_f = run_dir / "skipped.json"
    skipped = json.loads(skipped_f.read_text()) if skipped_f.is_file() else {}
    wall = sum(r.get("wall_s", 0.0) for r in records.values())
    bound_f = run_dir / "response_bound.json"
    bounds = json.loads(bound_f.read_text()) if bound_f.is_file() else {}
    return Evaluation(settings, records, skipped, [], wall, bounds)


def ordering(values: dict[str, float], higher_better: bool) -> str:
    """Algorithms from best to worst, e.g. ``greedy > adaptive > fifo``."""
    items = [(a, v) for a, v in values.items() if v == v]
    items.sort(key=lambda t: -t[1] if higher_better else t[1])
    return " > ".join(a for a, _ in items)


def _side_by_side(ev: Evaluation, metric: str) -> list[str]:
    """Rows: algorithms; cells: ``ours (paper)`` for the paper's columns we ran."""
    key, title, fmt = METRICS[metric]
    paper = PAPER_TABLES.get(metric, {})
    paper_cols = [(n, r) for n, rates in ((4, (0.01, 0.03, 0.05, 0.07, 0.09)), (8, (0.06, 0.08, 0.10, 0.12, 0.14)),
                                           (12, (0.11, 0.13, 0.15, 0.17, 0.19))) for r in rates]
    cols = ev.settings.columns()
    lines = [f"#### {title}: ours (paper)", "", "| algorithm | " + " | ".join(f"N{n} {r:g}" for n, r in cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    ours_mean, paper_mean = {}, {}
    for algo in ev.settings.algos:
        cells, mine, theirs = [], [], []
        for n, r in cols:
            rec = ev.records.get(Cell(algo, n, float(r)))
            v = float(rec["summary"][key]) if rec else math.nan
            p = math.nan
            if algo in paper and (n, r) in paper_cols:
                p = paper[algo][paper_cols.index((n, r))]
            mine.append(v)
            theirs.append(p)
            cells.append(("-" if v != v else fmt.format(v)) + ("" if p != p else f" ({fmt.format(p)})"))
        if any(v == v for v in mine) or any(p == p for p in theirs):
            lines.append(f"| {algo} | " + " | ".join(cells) + " |")
        if any(v == v for v in mine):
            ours_mean[algo] = float(np.nanmean(mine))
        if any(p == p for p in theirs):
            paper_mean[algo] = float(np.nanmean(theirs))
    if metric == "response" and ev.response_bounds:
        lines.append("| *lower bound (any schedule)* | " + " | ".join(
            fmt.format(ev.response_bounds[f"N{n} {r:g}"]) if f"N{n} {r:g}" in ev.response_bounds else "-"
            for n, r in cols) + " |")
        lines += ["", "The lower bound (docs/optimal.md) holds where every task finishes; at 4 nodes and rates 0.01 "
                  "and 0.03 episodes are truncated at 1,024 s, and means are over finished tasks only."]
    hb = HIGHER_IS_BETTER[metric]
    lines += ["", "Ordering, best first, by the mean over the columns above:", "",
              f"* ours: {ordering(ours_mean, hb)}"]
    if paper_mean:
        common = {a: v for a, v in paper_mean.items() if a in ours_mean}
        lines += [f"* paper, all its algorithms: {ordering(paper_mean, hb)}",
                  f"* paper, only the algorithms we ran: {ordering(common, hb) or '(none)'}"]
    return lines + [""]


def results_section(ev: Evaluation, extra: str = "") -> str:
    s = ev.settings
    lines = [BEGIN, "", f"Generated by `eat report {{DIR}} --results-md docs/results.md` from an `eat evaluate` run: "
             f"grid `{s.grid}`, {s.seeds} held-out seeds per cell ({s.seed0}..{s.seed0 + s.seeds - 1}), "
             f"algorithms: {', '.join(a for a in s.algos if any(c.algo == a for c in ev.records))}.", ""]
    if ev.skipped:
        algos = sorted({k.rsplit("-n", 1)[0] for k in ev.skipped})
        lines += ["Skipped (module or checkpoint missing when the run was made): " + ", ".join(algos), ""]
    for metric in METRICS:
        lines += _side_by_side(ev, metric)
    lines += ["![Fig. 8: efficiency (mean quality / mean response in model s, higher is better) per cluster size]"
              "(results-efficiency.png)", ""]
    if extra:
        lines += [extra.replace("### ", "#### "), ""]
    lines += [END, ""]
    return "\n".join(lines)


def update_results_md(path: Path, ev: Evaluation, extra: str = "") -> None:
    """Replace the generated section of ``path`` (between BEGIN/END markers; appended if absent)."""
    _replace_section(Path(path), BEGIN, END, results_section(ev, extra))


def _replace_section(path: Path, begin: str, end: str, section: str) -> None:
    """``section`` (which starts with ``begin`` and ends with ``end``) in place of the one in ``path``, else
    appended."""
    text = path.read_text() if path.is_file() else "# Results\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def write_ablation_report(run_dir: Path, results_md: Path | None = None) -> tuple[Path, Path]:
    """``eat report`` of an ``eat evaluate --ablation`` folder: ``report.md`` / ``report.html`` with the ablation's
    tables and verdict; optionally its generated section of ``results_md`` (between the ABLATION markers)."""
    from .evaluate import ablation_markdown  # noqa: PLC0415

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "ablation.json").read_text())
    body = ablation_markdown(summary)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text("# Ablation: from the authors' setting to SPEC's, one fix at a time\n\n" + body)
    html_path.write_text("<!doctype html><html><head><meta charset=\"utf-8\"><title>EAT ablation</title></head><body>\n"
                         + _md_to_html(md_path.read_text()) + "\n</body></html>\n")
    if results_md is not None:
        section = "\n".join([ABLATION_BEGIN, "", "Generated by `eat report {DIR} --results-md docs/results.md` from "
                             "an `eat evaluate --ablation` run.", "", body, ABLATION_END, ""])
        _replace_section(Path(results_md), ABLATION_BEGIN, ABLATION_END, section)
    return md_path, html_path


def _md_to_html(md: str) -> str:
    """The small Markdown subset our tables use: headings, pipe tables, paragraphs."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            head, body = rows[0], [r for r in rows[2:]]
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead>"
                       "<tbody>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                                           for r in body) + "</tbody></table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def write_report(run_dir: Path, results_md: Path | None = None) -> tuple[Path, Path]:
    """Write ``run_dir/report.md`` and ``run_dir/report.html`` (PNG plots embedded); optionally regenerate
    the generated section of ``results_md``."""
    run_dir = Path(run_dir)
    if (run_dir / "ablation.json").is_file():
        return write_ablation_report(run_dir, results_md)
    ev = load_evaluation(run_dir)
    if not ev.records:
        raise ValueError(f"{run_dir} holds no finished cells; run `eat evaluate --out {run_dir}` first")
    s = ev.settings
    parts = [f"# EAT evaluation report: grid `{s.grid}`", "",
             f"{len(ev.records)} cells, {s.seeds} held-out workload seeds each ({s.seed0}..{s.seed0 + s.seeds - 1}), "
             f"simulator episodes of {s.base.tasks_per_episode} tasks; cell compute time {ev.wall_s:.0f} s.", ""]
    for metric in METRICS:
        parts.append(markdown_table(ev, metric))
    opt = run_dir / "optimality.md"
    if opt.is_file():
        parts.append(opt.read_text())
    md_parts = list(parts)
    html_parts = [_md_to_html("\n".join(parts))]
    for name, caption in PLOTS:
        png = run_dir / name
        if png.is_file():
            md_parts.append(f"![{caption}]({name})\n")
            data = base64.b64encode(png.read_bytes()).decode()
            html_parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(caption)}\">"
                              f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    config = json.dumps(s.to_dict(), indent=1)
    md_parts += ["## Configuration", "", "```json", config, "```", ""]
    html_parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(config)}</pre>"]
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text("\n".join(md_parts))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")
    html_path.write_text(f"<!doctype html><html><head><meta charset=\"utf-8\"><title>EAT evaluation</title>"
                         f"<style>{style}</style></head><body>\n" + "\n".join(html_parts) + "\n</body></html>\n")
    if results_md is not None:
        update_results_md(results_md, ev, opt.read_text() if opt.is_file() else "")
        if (run_dir / "efficiency.png").is_file():
            Path(results_md).with_name("results-efficiency.png").write_bytes((run_dir / "efficiency.png").read_bytes())
    return md_path, html_path
