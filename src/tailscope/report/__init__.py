"""The HTML report: one self-contained file (no network request; images inlined as PNG data),
with the model summary, its warnings, the model-level figures, a sortable per-layer table and a
section per layer with its figures."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:28px} .muted{color:#666}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;border-radius:6px;
padding:8px 12px;min-width:120px}.card b{display:block;font-size:18px}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ddd;padding:3px 6px;
text-align:right}th{background:#f4f4f4;cursor:pointer;position:sticky;top:0}
td.l,th.l{text-align:left}tr.over td{background:#fde8e8}tr.under td{background:#fff3e0}
tr.failed td{background:#eee;color:#777}.warn li{margin:2px 0}img{max-width:100%}
details{margin:6px 0}summary{cursor:pointer}
"""

_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var table = th.closest('table'), body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.getAttribute('data-asc') !== 'true';
    rows.sort(function(a, b){
      var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
    th.setAttribute('data-asc', asc);
  });
});
"""

TABLE_COLUMNS = ["layer_id", "module", "layer_type", "N", "M", "num_evals", "alpha", "D", "xmin",
                 "num_pl_spikes", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                 "stable_rank", "status", "warning", "reason"]


def _png(fig, dpi=72) -> str:
    from .. import plots

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plots._pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(value) -> tuple[str, str]:
    """(sort key, shown text) for a table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value)), f"{value:.4g}"
    return str(value), str(value)


def render(analysis, *, title: str | None = None, layer_figures: bool = True) -> str:
    """The report as an HTML string."""
    from .. import plots

    d = analysis.details
    s = analysis.summary()
    title = title or f"tailscope report: {analysis.source}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='muted'>{s['layers']} layers analysed ({s['success']} fitted, "
             f"{s['failed']} failed), {s['skipped']} tensors skipped, in "
             f"{analysis.seconds:.1f} s.</p>"]
    cards = [("mean alpha", s["alpha"]), ("mean alpha_weighted", s["alpha_weighted"]),
             ("mean log_alpha_norm", s["log_alpha_norm"]), ("mean log_norm", s["log_norm"]),
             ("mean log_spectral_norm", s["log_spectral_norm"]),
             ("mean stable_rank", s["stable_rank"]), ("over-trained", s["over_trained"]),
             ("under-trained", s["under_trained"])]
    parts.append("<h2>Summary</h2><div class='cards'>" + "".join(
        f"<div class='card'><span class='muted'>{html.escape(k)}</span><b>{_cell(v)[1]}</b></div>"
        for k, v in cards) + "</div>")
    parts.append(_warnings(d))
    if len(d):
        figs = [plots.alpha_per_layer(analysis)]
        ok = d["status"] == "success"
        if ok.any():
            figs += [plots.metric_per_layer(analysis, "alpha_weighted"),
                     plots.metric_per_layer(analysis, "log_spectral_norm"),
                     plots.alpha_histogram(analysis)]
        parts.append("<h2>The model</h2>" + "".join(
            f"<img alt='model figure' src='{_png(f)}'>" for f in figs))
    parts.append(_table(d))
    if layer_figures and len(d):
        parts.append("<h2>Layers</h2>")
        for key in plots._layer_keys(analysis):
            row = d[d["layer_id"] == key[0]].iloc[0]
            label = f"layer {key[0]}{'' if key[1] is None else f' slice {key[1]}'}: " \
                    f"{row['module']}"
            status = row["status"] if row["status"] != "success" else \
                f"alpha {row['alpha']:.3f}" + (f", {row['warning']}" if row["warning"] else "")
            img = _png(plots.layer_figure(analysis, key), dpi=55)
            parts.append(f"<details id='layer-{key[0]}'><summary>{html.escape(label)} "
                         f"<span class='muted'>({html.escape(status)})</span></summary>"
                         f"<img loading='lazy' alt='{html.escape(label)}' src='{img}'></details>")
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)


def _warnings(d) -> str:
    items = []
    for _, row in d.iterrows():
        name = html.escape(f"layer {row['layer_id']} {row['module']}")
        if row["status"] != "success":
            items.append(f"<li>{name}: no fit ({html.escape(str(row['reason']))})</li>")
        elif row["warning"] == "over-trained":
            items.append(f"<li>{name}: alpha {row['alpha']:.2f} &lt; 2 — a very heavy tail: "
                         "over-trained or over-regularised (HT-SR)</li>")
        elif row["warning"] == "under-trained":
            items.append(f"<li>{name}: alpha {row['alpha']:.2f} &gt; 6 — close to random: "
                         "under-trained or poorly correlated</li>")
    if not items:
        return "<h2>Warnings</h2><p>None: every fitted layer has 2 &le; alpha &le; 6.</p>"
    return "<h2>Warnings</h2><ul class='warn'>" + "".join(items) + "</ul>"


def _table(d) -> str:
    cols = [c for c in TABLE_COLUMNS if c in d.columns]
    if "slice_id" in d.columns:
        cols.insert(2, "slice_id")
    text_cols = ("module", "layer_type", "status", "warning", "reason")
    head = "".join(f"<th class='{'l' if c in text_cols else ''}'>{html.escape(c)}</th>"
                   for c in cols)
    rows = []
    for _, row in d.iterrows():
        cls = "failed" if row["status"] != "success" else \
            {"over-trained": "over", "under-trained": "under"}.get(row["warning"], "")
        cells = []
        for c in cols:
            key, text = _cell(row[c])
            left = " class='l'" if c in text_cols else ""
            cells.append(f"<td{left} data-v='{html.escape(key, quote=True)}'>"
                         f"{html.escape(text)}</td>")
        rows.append(f"<tr class='{cls}'>{''.join(cells)}</tr>")
    return ("<h2>Layers table</h2><p class='muted'>Click a column to sort.</p>"
            f"<table class='sortable' id='layers'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def write_report(analysis, path, *, title: str | None = None, layer_figures: bool = True) -> Path:
    """Write the report to ``path`` (atomically; its folder is created when missing)."""
    from ..analysis import _atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(analysis, title=title, layer_figures=layer_figures)
    return _atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
