"""The evaluation report as an HTML page: the figures of `make eval`'s report.json as
tables and bar charts (inline SVG, no plotting library), for people to read."""
from __future__ import annotations

import html
from typing import Any

CHARTED = ("ndcg@10", "recall@20", "hr@10", "cold_recall@20")
BAR, GAP, LABEL_WIDTH, WIDTH = 22, 6, 230, 640


def bar_chart(title: str, values: dict[str, float]) -> str:
    """Horizontal bars, one per entry, scaled to the largest value."""
    top = max(values.values(), default=0.0) or 1.0
    height = len(values) * (BAR + GAP) + 30
    rows = []
    for n, (label, value) in enumerate(values.items()):
        y = 24 + n * (BAR + GAP)
        length = (WIDTH - LABEL_WIDTH - 70) * value / top
        rows.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + BAR - 7}" text-anchor="end">{html.escape(label)}</text>'
                    f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR}" fill="#4477aa"/>'
                    f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + BAR - 7}">{value:.4f}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" '
            f'font-size="12"><text x="0" y="14" font-weight="bold">{html.escape(title)}</text>{"".join(rows)}</svg>')


def table(figures: dict[str, dict[str, float]]) -> str:
    metrics = list(next(iter(figures.values())).keys()) if figures else []
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = "".join(f"<tr><td>{html.escape(name)}</td>"
                   + "".join(f"<td>{values.get(m, 0):.4f}</td>" for m in metrics) + "</tr>"
                   for name, values in figures.items())
    return f"<table><tr><th>validation</th>{head}</tr>{body}</table>"


def render(report: dict[str, Any]) -> str:
    """The page for a report.json written by `make eval`."""
    figures: dict[str, dict[str, float]] = report["validation"]
    charts = [bar_chart(f"{metric}: the blend, and each signal alone (content only and popularity are the baselines)",
                        {name: values[metric] for name, values in figures.items()}) for metric in CHARTED]
    blend = figures["blend"]
    charts.append(bar_chart("recall@20 of the blend: items new to the catalog vs items with interactions",
                            {"cold items (no interactions)": blend["cold_recall@20"],
                             "warm items": blend["warm_recall@20"]}))
    weights = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in report["weights"].items())
    floor = report.get("cold_floor")
    rule = "" if floor is None else (
        f"<p>The fit maximises ndcg@10 subject to cold_recall@20 &ge; {floor['cold_recall@20']:.4f}, the best of the "
        f"signals alone ({html.escape(floor['set_by'])}): "
        + ("met." if floor["met"] else "<strong>NOT MET by any weighting reached: the lists are ranked by "
                                       f"{html.escape(floor['set_by'])}'s own weighting.</strong>") + "</p>")
    lists = "".join(f"<li>{html.escape(name)}: <code>{html.escape(path)}</code></li>"
                    for name, path in report.get("baseline_lists", {}).items())
    seconds = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in report["seconds"].items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>recsys evaluation</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}} td:first-child{{text-align:left}}</style></head>
<body><h1>Offline evaluation</h1>
<p>Validation carve of the training interactions ({report["users"]} test users,
{report["items"]} items). "Alone" ranks by one component with the others weighted 0;
cold items are the carve's items held out whole (no interactions in training).</p>
{table(figures)}
{rule}
{f"<p>Test-split lists of the baselines, for score.py:</p><ul>{lists}</ul>" if lists else ""}
{"".join(f"<p>{chart}</p>" for chart in charts)}
<h2>Fitted blend weights</h2><table>{weights}</table>
<h2>Seconds per step</h2><table>{seconds}</table>
</body></html>
"""
