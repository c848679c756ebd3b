"""The HTML report: one self-contained file (no network request; images inlined as PNG data),
with the model summary, its warnings, the model-level figures, a sortable per-layer table and a
section per layer with its figures."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from ..engine.columns import (
    BY_NAME,
    OVER_TRAINED,
    TABLE_COLUMNS,
    UNDER_TRAINED,
    WARNING_EVIDENCE,
    flag_text,
)

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

_PLOT_JS = """
function tsScale(lo, hi, a, b){ return function(v){ return a + (v - lo) / ((hi - lo) || 1) * (b - a); }; }
function tsFrame(ctx, w, h, title, xl, yl){
  ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, w, h); ctx.strokeStyle = '#999';
  ctx.strokeRect(40, 20, w - 50, h - 50); ctx.fillStyle = '#222'; ctx.font = '12px sans-serif';
  ctx.fillText(title, 45, 14); ctx.fillText(xl, w / 2 - 30, h - 8);
  ctx.save(); ctx.translate(10, h / 2 + 20); ctx.rotate(-Math.PI / 2); ctx.fillText(yl, 0, 0);
  ctx.restore();
}
function tsLine(ctx, xs, ys, sx, sy, color, dash){
  ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.setLineDash(dash || []); ctx.beginPath();
  var started = false;
  for (var i = 0; i < xs.length; i++){
    if (!isFinite(xs[i]) || !isFinite(ys[i])) continue;
    var X = sx(xs[i]), Y = sy(ys[i]);
    if (!started){ ctx.moveTo(X, Y); started = true; } else { ctx.lineTo(X, Y); }
  }
  ctx.stroke(); ctx.setLineDash([]);
}
function tsVLine(ctx, X, h, color){
  ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath(); ctx.moveTo(X, 20);
  ctx.lineTo(X, h - 30); ctx.stroke();
}
function tsDraw(el){
  var d = JSON.parse(el.querySelector('script[type="application/json"]').textContent);
  var canvases = el.querySelectorAll('canvas'), w = 330, h = 220, O = '#ff7f0e', B = '#1f77b4',
      R = '#d62728';
  var lx = d.evals.filter(function(v){ return v > 0; }).map(Math.log10);
  var lo = Math.min.apply(null, lx), hi = Math.max.apply(null, lx), nb = 60, counts = [];
  for (var i = 0; i < nb; i++) counts.push(0);
  lx.forEach(function(v){ counts[Math.min(nb - 1, Math.floor((v - lo) / ((hi - lo) || 1) * nb))]++; });
  var ctx = canvases[0].getContext('2d'), cmax = Math.max.apply(null, counts);
  tsFrame(ctx, w, h, 'ESD (log10 eigenvalue)', 'log10 eigenvalue', 'count');
  var sx = tsScale(lo, hi, 40, w - 10), sy = tsScale(0, cmax, h - 30, 20);
  ctx.fillStyle = B;
  counts.forEach(function(c, i){ var x0 = sx(lo + i * (hi - lo) / nb), x1 = sx(lo + (i + 1) * (hi - lo) / nb);
    ctx.fillRect(x0, sy(c), Math.max(1, x1 - x0 - 1), sy(0) - sy(c)); });
  if (d.fit){
    tsVLine(ctx, sx(Math.log10(d.fit.xmin)), h, O);
    var c2 = canvases[1].getContext('2d');
    tsFrame(c2, w, h, 'tail CCDF: data (solid) vs fit (dotted)', 'log10 eigenvalue', 'log10 P(X >= x)');
    var tail = d.evals.filter(function(v){ return v >= d.fit.xmin; }).sort(function(a, b){ return a - b; });
    var tx = tail.map(Math.log10), ty = tail.map(function(v, i){ return Math.log10(1 - i / tail.length); });
    var fy = tail.map(function(v){ return (1 - d.fit.alpha) * Math.log10(v / d.fit.xmin); });
    var ylo = Math.min(Math.min.apply(null, ty), Math.min.apply(null, fy));
    var s2x = tsScale(tx[0], tx[tx.length - 1], 40, w - 10), s2y = tsScale(ylo, 0, h - 30, 20);
    tsLine(c2, tx, ty, s2x, s2y, R); tsLine(c2, tx, fy, s2x, s2y, R, [3, 3]);
    var c3 = canvases[2].getContext('2d');
    tsFrame(c3, w, h, 'KS distance D vs xmin', 'log10 xmin', 'D');
    var kx = d.fit.xmins.map(Math.log10), ky = d.fit.Ds;
    var finite = ky.filter(isFinite);
    var s3x = tsScale(Math.min.apply(null, kx), Math.max.apply(null, kx), 40, w - 10),
        s3y = tsScale(0, Math.max.apply(null, finite), h - 30, 20);
    tsLine(c3, kx, ky, s3x, s3y, B);
    c3.fillStyle = O; c3.beginPath();
    c3.arc(s3x(Math.log10(d.fit.xmin)), s3y(d.fit.D), 5, 0, 2 * Math.PI); c3.fill();
  }
  if (d.mp) tsDrawMP(el.querySelector('canvas[data-panel="mp"]'), d, w, h, O, B, R);
  if (d.rand) tsDrawRand(el.querySelector('canvas[data-panel="rand"]'), d, w, h, O, B, R);
}
function tsHist(values, lo, hi, nb){
  var counts = [], bw = (hi - lo) / nb || 1;
  for (var i = 0; i < nb; i++) counts.push(0);
  values.forEach(function(v){
    if (v >= lo && v <= hi) counts[Math.min(nb - 1, Math.floor((v - lo) / bw))]++; });
  return counts.map(function(c){ return c / (values.length * bw); });
}
function tsBars(ctx, dens, lo, hi, sx, sy, color){
  var nb = dens.length; ctx.fillStyle = color;
  dens.forEach(function(c, i){ var x0 = sx(lo + i * (hi - lo) / nb), x1 = sx(lo + (i + 1) * (hi - lo) / nb);
    ctx.fillRect(x0, sy(c), Math.max(1, x1 - x0 - 1), sy(0) - sy(c)); });
}
function tsDrawMP(cv, d, w, h, O, B, R){
  // the MP bulk: linear histogram of the rescaled ESD, the fitted density, the bulk edge
  var ctx = cv.getContext('2d'), s = d.mp.W_scale * d.mp.W_scale;
  var xs = d.evals.map(function(v){ return v * s; });
  var hi = Math.max(Math.max.apply(null, xs), d.mp.x[d.mp.x.length - 1]) * 1.02, nb = 60;
  var dens = tsHist(xs, 0, hi, nb), dmax = Math.max.apply(null, dens);
  var ymax = Math.max(dmax, Math.min(Math.max.apply(null, d.mp.y), 1.5 * dmax)) || 1;
  tsFrame(ctx, w, h, 'MP bulk: sigma ' + d.mp.sigma.toFixed(3) + ', ' + d.mp.num_spikes + ' spikes',
          'eigenvalue x W_scale^2', 'density');
  var sx = tsScale(0, hi, 40, w - 10), sy = tsScale(0, ymax, h - 30, 20);
  ctx.globalAlpha = 0.6; tsBars(ctx, dens, 0, hi, sx, sy, B); ctx.globalAlpha = 1;
  tsLine(ctx, d.mp.x, d.mp.y.map(function(v){ return Math.min(v, ymax); }), sx, sy, R);
  tsVLine(ctx, sx(d.mp.bulk_max), h, O);
  cv.setAttribute('data-ok', '1');
}
function tsDrawRand(cv, d, w, h, O, B, R){
  // log10 histograms of the ESD and of the element-shuffled matrices' ESD, shared bins
  var ctx = cv.getContext('2d'), pos = function(v){ return v > 0; };
  var lr = d.evals.filter(pos).map(Math.log10), lq = d.rand.filter(pos).map(Math.log10);
  var all = lr.concat(lq), lo = Math.min.apply(null, all), hi = Math.max.apply(null, all), nb = 60;
  var dr = tsHist(lr, lo, hi, nb), dq = tsHist(lq, lo, hi, nb);
  var ymax = Math.max(Math.max.apply(null, dr), Math.max.apply(null, dq)) || 1;
  tsFrame(ctx, w, h, 'ESD (blue) and randomized ESD (red)', 'log10 eigenvalue', 'density');
  var sx = tsScale(lo, hi, 40, w - 10), sy = tsScale(0, ymax, h - 30, 20);
  ctx.globalAlpha = 0.7; tsBars(ctx, dr, lo, hi, sx, sy, B);
  ctx.globalAlpha = 0.5; tsBars(ctx, dq, lo, hi, sx, sy, R); ctx.globalAlpha = 1;
  tsVLine(ctx, sx(Math.max.apply(null, lq)), h, O);
  cv.setAttribute('data-ok', '1');
}
document.querySelectorAll('details.layer').forEach(function(el){
  el.addEventListener('toggle', function(){
    if (el.open && !el.getAttribute('data-drawn')){ tsDraw(el); el.setAttribute('data-drawn', '1'); }
  });
  if (location.hash === '#open-all') el.open = true;  // draw every layer (used by the tests)
});
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

def _cell(value) -> tuple[str, str]:
    """(sort key, shown text) for a table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value)), f"{value:.4g}"
    return str(value), str(value)


def render(analysis, *, title: str | None = None, layer_figures: bool = True,
           comparison=None) -> str:
    """The report as an HTML string (``comparison``: ``compare_to_base``'s table, shown as a
    section of its own)."""
    from . import plots

    d = analysis.details
    s = analysis.summary()
    title = title or f"tailscope report: {analysis.source}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='muted'>{s['layers']} layers analysed ({s['success']} fitted, "
             f"{s['failed']} failed), {_skipped(analysis, s)}, in "
             f"{analysis.seconds:.1f} s.</p>"]
    parts.append("<h2>Summary</h2>" + _cards(s, analysis.summary_layers()))
    parts.append(_warnings(d))
    if len(d):
        figs = [plots.alpha_per_layer(analysis)]
        ok = d["status"] == "success"
        if ok.any():
            figs += [plots.metric_per_layer(analysis, "alpha_weighted"),
                     plots.metric_per_layer(analysis, "log_spectral_norm"),
                     plots.alpha_histogram(analysis)]
        parts.append("<h2>The model</h2>" + "".join(
            f"<img alt='model figure' src='{plots.data_uri(f)}'>" for f in figs))
    parts.append(_table(d))
    if comparison is not None:
        parts.append(_comparison(comparison))
    if layer_figures and len(d):
        parts.append("<h2>Layers</h2><p class='muted'>Open a layer to draw its figures: the ESD "
                     "with xmin (orange), the tail's CCDF against the fit, and D for every "
                     "candidate xmin with the minimum (orange); with mp_fit the rescaled ESD with the "
                     "fitted Marchenko-Pastur density and its bulk edge (orange); with randomize "
                     "the ESD (blue) over the element-shuffled matrices' ESD (red).</p>")
        for key in analysis.keys():
            parts.append(_layer_section(analysis, key))
    parts.append(f"<script>{_PLOT_JS}</script>")
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)


def _comparison(table) -> str:
    """The fine-tune against its base (``compare_to_base``'s table), or a quantized model
    against its original (``quantization_damage``'s table): the figure and the per-layer
    table."""
    from ..util.optional import MissingExtra
    from . import plots

    if "rel_frobenius" in table.columns:
        head = ("<h2>Quantization damage: compared to the original model</h2><p class='muted'>"
                "Per layer of the quantized model (dequantized as the reference libraries do): "
                "how it was stored, alpha of the original and of the quantized model, delta "
                "alpha (quantized - original), and the relative Frobenius error "
                "||W_q - W||_F / ||W||_F.</p>")
        draw, alt = plots.quantization_damage, "quantization damage"
    else:
        head = ("<h2>Compared to the base model</h2><p class='muted'>Per layer: alpha of the "
                "base and of the fine-tuned model, their difference, alpha of W - W_base, the "
                "correlation traps of each, and the intruder dimensions (top singular vectors "
                "of the fine-tuned matrix far from every singular vector of the base).</p>")
        draw, alt = plots.base_comparison, "base comparison"
    try:
        fig = f"<img alt='{alt}' src='{plots.data_uri(draw(table))}'>"
    except MissingExtra as err:
        fig = f"<p class='muted'>No figure: {html.escape(str(err))}</p>"
    cols = list(table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v)[1])}</td>" for v in row)
                   + "</tr>" for row in table.itertuples(index=False))
    return (head + fig + "<div class='table'><table><thead><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            + f"</tr></thead><tbody>{body}</tbody></table></div>")


def _skipped(analysis, s: dict) -> str:
    """'N tensors skipped (k max_evals, ...)', escaped."""
    kinds = analysis.skip_counts()
    return html.escape(f"{s['skipped']} tensors skipped" + (
        " (" + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")" if kinds else ""))


def _cards(s: dict, layers: dict | None = None) -> str:
    """The summary means and counts as a row of cards; each mean says over how many layers it
    was taken (``layers``: :meth:`~tailscope.Analysis.summary_layers`)."""
    layers = layers or {}

    def mean(k: str) -> tuple[str, float]:
        n = layers.get(k, s["success"])
        return f"mean {k} (over {n} of {s['success']} fitted layers)" if n != s["success"] \
            else f"mean {k} ({n} layers)", s[k]

    names = ["alpha", "alpha_weighted", "log_alpha_norm", "log_norm", "log_spectral_norm",
             "stable_rank"] + [k for k in layers if k not in {
                 "alpha", "alpha_weighted", "log_alpha_norm", "log_norm", "log_spectral_norm",
                 "stable_rank", "D"}]
    cards = [mean(k) for k in names if k in s]
    cards += [(f"alpha < {OVER_TRAINED:g} (flagged)", s["over_trained"]),
              (f"alpha > {UNDER_TRAINED:g} (flagged)", s["under_trained"])]
    return "<div class='cards'>" + "".join(
        f"<div class='card'><span class='muted'>{html.escape(k)}</span><b>{_cell(v)[1]}</b></div>"
        for k, v in cards) + "</div>"


def _thin(values: np.ndarray, limit: int) -> list:
    """At most ``limit`` evenly spaced values (figures do not need every point)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size > limit:
        values = values[np.linspace(0, values.size - 1, limit).astype(int)]
    return [float(v) if np.isfinite(v) else None for v in values]


def _layer_section(analysis, key) -> str:
    import json

    d = analysis.details
    rows = d[d["layer_id"] == key[0]]
    if key[1] is not None:
        rows = rows[rows["slice_id"] == key[1]]
    row = rows.iloc[0]
    label = f"layer {key[0]}{'' if key[1] is None else f' slice {key[1]}'}: {row['module']}"
    result = analysis.result(key)
    evals, fit = result.evals, result.fit
    if row["status"] == "success":
        flag = f", flagged {row['warning']} (convention)" if row["warning"] else ""
        status = f"alpha {row['alpha']:.3f}{flag}"
    else:
        status = f"{row['status']}: {row['reason']}"
    data = {"evals": _thin(np.sort(evals), 4000) if evals is not None else [], "fit": None}
    if fit is not None:
        data["fit"] = {"alpha": fit.alpha, "xmin": fit.xmin, "D": fit.D,
                       "xmins": _thin(fit.xmins, 600), "Ds": _thin(fit.Ds, 600)}
    mp, rand = result.mp, result.randomized
    panels = []
    if mp is not None and evals is not None:
        from .plots import mp_curve

        x, y = mp_curve(mp, 200)
        w2 = mp.W_scale ** 2
        data["mp"] = {"W_scale": mp.W_scale, "sigma": mp.sigma_mp, "num_spikes": mp.num_spikes,
                      "bulk_max": mp.bulk_max * w2, "x": _thin(x, 200), "y": _thin(y, 200)}
        panels.append("mp")
    if rand is not None and evals is not None:
        data["rand"] = _thin(rand.evals, 4000)
        panels.append("rand")
    payload = json.dumps(data).replace("</", "<\\/")
    n_canvas = 3 if fit is not None else (1 if evals is not None else 0)
    canvases = "".join("<canvas width='330' height='220'></canvas>" for _ in range(n_canvas)) + \
        "".join(f"<canvas data-panel='{p}' width='330' height='220'></canvas>" for p in panels)
    note = "" if fit is not None else \
        f"<p class='muted'>No power-law fit: {html.escape(str(row['reason']))}</p>"
    return (f"<details class='layer' id='layer-{key[0]}{'' if key[1] is None else f'-{key[1]}'}'>"
            f"<summary>{html.escape(label)} <span class='muted'>({html.escape(status)})</span>"
            f"</summary>{note}{canvases}<script type='application/json'>{payload}</script>"
            "</details>")


def _warnings(d) -> str:
    items = []
    for _, row in d.iterrows():
        name = html.escape(f"layer {row['layer_id']} {row['module']}")
        if row["status"] != "success":
            items.append(f"<li>{name}: no fit ({html.escape(str(row['reason']))})</li>")
        elif row["warning"]:
            items.append(f"<li>{name}: {html.escape(flag_text(row['warning'], row['alpha']))}"
                         "</li>")
    evidence = f"<p class='muted'>{html.escape(WARNING_EVIDENCE)}</p>"
    if not items:
        return (f"<h2>Warnings</h2><p>None: every fitted layer has {OVER_TRAINED:g} &le; alpha "
                f"&le; {UNDER_TRAINED:g}.</p>{evidence}")
    return "<h2>Warnings</h2><ul class='warn'>" + "".join(items) + "</ul>" + evidence


def _rows(d, cols, text_cols) -> tuple[str, str]:
    """(header cells, body rows) of the per-layer table; over-trained rows have the class
    'over', under-trained 'under', failed ones 'failed'."""
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
    return head, "".join(rows)


def _columns(d) -> tuple[list[str], list[str]]:
    cols = [c for c in TABLE_COLUMNS if c in d.columns]
    return cols, [c for c in cols if BY_NAME[c].dtype == "text"]


def _table(d) -> str:
    cols, text_cols = _columns(d)
    head, rows = _rows(d, cols, text_cols)
    csv = base64.b64encode(d.to_csv(index=False).encode()).decode("ascii")
    return ("<h2>Layers table</h2><p class='muted'>Click a column to sort. "
            f"<a download='details.csv' href=\"data:text/csv;base64,{csv}\">The whole table, "
            f"every column ({len(d.columns)}), as CSV</a>.</p>"
            f"<table class='sortable' id='layers'><thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table>")


# --- in a notebook -----------------------------------------------------------------------------
_NB_CSS = """
.tailscope{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222}
.tailscope h3{font-size:15px;margin:12px 0 6px}.tailscope .muted{color:#666}
.tailscope .cards{display:flex;flex-wrap:wrap;gap:8px}.tailscope .card{border:1px solid #ddd;
border-radius:6px;padding:6px 10px;min-width:110px}.tailscope .card b{display:block;font-size:16px}
.tailscope table{border-collapse:collapse;font-size:12px}.tailscope th,.tailscope td{border:1px
solid #ddd;padding:2px 6px;text-align:right}.tailscope th{background:#f4f4f4}
.tailscope td.l,.tailscope th.l{text-align:left}.tailscope tr.over td{background:#fde8e8}
.tailscope tr.under td{background:#fff3e0}.tailscope tr.failed td{background:#eee;color:#777}
.tailscope .scroll{max-height:420px;overflow:auto}.tailscope img{max-width:100%}
"""


def notebook_html(analysis, *, max_rows: int = 500, figure: bool = True) -> str:
    """An :class:`~tailscope.Analysis` as one HTML fragment for a notebook (its
    ``_repr_html_``): the summary cards, the warnings, the alpha-per-layer figure as an inline
    PNG (``figure=False``, or no matplotlib: left out and said so), and the per-layer table with
    the over-trained (red) and under-trained (orange) rows marked; at most ``max_rows`` rows
    (the rest are in ``details``). No script and no network request: it shows the same in
    Jupyter, VS Code and a static HTML export."""
    d = analysis.details
    s = analysis.summary()
    parts = [f"<div class='tailscope'><style>{_NB_CSS}</style>",
             f"<h3>{html.escape(str(analysis.source))}</h3>",
             f"<p class='muted'>{s['layers']} layers analysed ({s['success']} fitted, "
             f"{s['failed']} failed), {_skipped(analysis, s)}, in "
             f"{analysis.seconds:.1f} s.</p>", _cards(s, analysis.summary_layers()),
             _warnings(d).replace("<h2>", "<h3>").replace("</h2>", "</h3>")]
    if figure and len(d):
        parts.append(_alpha_figure(analysis))
    cols, text_cols = _columns(d)
    shown = d.iloc[:max_rows]
    head, rows = _rows(shown, cols, text_cols)
    more = (f" Showing the first {max_rows} of {len(d)} rows." if len(d) > max_rows else "")
    parts.append(f"<h3>Layers</h3><p class='muted'>Rows in red: alpha &lt; {OVER_TRAINED:g} "
                 f"(flagged over-trained); orange: alpha &gt; {UNDER_TRAINED:g} (flagged "
                 f"under-trained), HT-SR's conventions; grey: failed. {len(cols)} of the "
                 f"{len(d.columns)} columns of <code>details</code>."
                 f"{more}</p><div class='scroll'><table class='layers'><thead><tr>{head}</tr>"
                 f"</thead><tbody>{rows}</tbody></table></div></div>")
    return "\n".join(parts)


def _alpha_figure(analysis) -> str:
    from ..util.optional import MissingExtra
    from . import plots

    try:
        uri = plots.data_uri(plots.alpha_per_layer(analysis))
    except MissingExtra as err:
        return f"<p class='muted'>No figure: {html.escape(str(err))}</p>"
    return f"<img class='alpha-per-layer' alt='alpha per layer' src='{uri}'>"


def write_report(analysis, path, *, title: str | None = None, layer_figures: bool = True,
                 comparison=None) -> Path:
    """Write the report to ``path`` (atomically; its folder is created when missing);
    ``comparison``: ``compare_to_base``'s table, as a section."""
    from ..util.io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(analysis, title=title, layer_figures=layer_figures, comparison=comparison)
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
