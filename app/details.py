"""Layer details: everything known about the selected layer, read off the Profile."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QTextBrowser

from layerscope.profiler.format import fmt_bytes, fmt_count, fmt_ms, fmt_pct

from .state import AppState


class LayerDetails(QTextBrowser):
    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.setOpenLinks(False)
        state.selectionChanged.connect(lambda _lid: state.later(lambda: self.show_layer(state.selected)))
        state.profileChanged.connect(lambda _p: self.show_layer(""))

    def show_layer(self, layer_id: str) -> None:
        p = self.state.profile
        if p is None or not layer_id:
            self.setHtml("<p style='color:gray'>Select a layer in the table, graph or roofline.</p>")
            return
        r = p.row(layer_id)
        layer, m, t, pt = r.layer, r.metrics, r.timing, r.point

        def one(x) -> str:
            text = f"{'×'.join(map(str, x.shape)) or 'scalar'} {x.dtype}"
            if x.is_weight:
                text += f"  ({x.role.value} {x.name}" + (f", tied to {x.tied_to}: one storage" if x.tied_to else "") + ")"
            return html.escape(text)

        def shapes(ts) -> str:
            return "<br>".join(one(x) for x in ts) or "-"

        rows = [
            ("Type", html.escape(layer.module_type or layer.target)),
            ("Op kind / formula", f"{layer.op_kind} / {m.formula}"),
            ("Parents", html.escape(" › ".join(layer.parents) or "(top level)")),
            ("Source", html.escape(f"{layer.source} — {layer.source.code}" if layer.source else "unknown")),
            ("Inputs", shapes(layer.operands)),
            ("Outputs", shapes(layer.outputs)),
            ("Params", f"{m.params:,} ({fmt_bytes(m.weight_bytes)} weights)"),
            ("FLOPs / MACs", f"{fmt_count(m.flops)} / {fmt_count(m.macs)}"),
            ("Bytes read / written", f"{fmt_bytes(m.bytes_read)} / {fmt_bytes(m.bytes_written)}" + (" (view: no copy)" if layer.is_view else "")),
            ("Arithmetic intensity", "-" if m.arithmetic_intensity is None else f"{m.arithmetic_intensity:.2f} FLOP/byte"),
            ("Latency", f"{fmt_ms(t.latency_ms)} ms (IQR {fmt_ms(t.p25_ms)}–{fmt_ms(t.p75_ms)}, min {fmt_ms(t.min_ms)}), "
                        f"{fmt_pct(r.latency_share)} of total" if t else "-"),
            ("Bound", f"<b>{r.bound.value}</b>" + (f" — {pt.roof_text()} of roof" if pt and pt.roof_fraction is not None else "")
             + (" <span style='color:#c62828'>faster than the roof allows: the calibration reads low, or the data came from "
                "cache</span>" if pt and pt.above_roof else "")),
            ("Attained", f"{pt.attained_gflops:.2f} GFLOP/s, {pt.attained_gbs:.2f} GB/s" if pt and pt.attained_gflops and pt.attained_gbs else "-"),
            ("Activation memory", f"allocates {fmt_bytes(t.output_bytes)}, {fmt_bytes(t.live_bytes_after)} live after" if t else "-"),
            ("Graph neighbours", html.escape(f"in: {', '.join(p.graph.predecessors(layer_id)) or 'model input'}; "
                                             f"out: {', '.join(p.graph.successors(layer_id)) or 'model output'}")),
        ]
        body = "".join(f"<tr><td style='color:#555;padding-right:8px'>{k}</td><td>{v}</td></tr>" for k, v in rows)
        self.setHtml(f"<h3>{html.escape(layer.id)}</h3><table>{body}</table>")
