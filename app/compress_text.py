"""What the compression panel says, as HTML or config text, without Qt: the static estimate of a selection,
the summary of an applied plan, and the per-runtime config exports."""

from __future__ import annotations

import html
import json

from layerscope.profiler import LayerScopeError, Profile
from layerscope.profiler.compression import (
    CompressionPlan,
    CompressResult,
    coreml_configs,
    estimate_static,
    nncf_config,
    resolve_plan,
    torch_ao_mapping,
    torchao_config,
)
from layerscope.profiler.format import fmt_bytes, fmt_count, fmt_db, fmt_ms, fmt_pct


def summary_html(res: CompressResult) -> str:
    """What Apply gave, as the panel shows it: size, latency, output, top-1, ORT int8, what stayed float, warnings."""
    o = res.output
    lines = [
        f"<b>Size</b> {fmt_bytes(res.size_bytes_before)} → {fmt_bytes(res.size_bytes_after)} (<b>{res.size_ratio:.3f}×</b>)",
        f"<b>Latency</b> {fmt_ms(res.latency_ms_before)} → {fmt_ms(res.latency_ms_after)} ms ({html.escape(res.latency.text())})"
        + (" <i>simulated: float kernels</i>" if res.simulated else ""),
        f"<b>Output</b> SQNR {fmt_db(o.sqnr_db)}, cosine {o.cosine:.5f} on {o.samples} samples",
    ]
    if o.accuracy_points is not None:
        lines.append(f"<b>Top-1</b> {fmt_pct(o.accuracy_reference)} → {fmt_pct(o.accuracy_candidate)} "
             f"({o.accuracy_points:+.2f} points)")
    if res.ort is not None:
        lines.append(f"<b>ORT int8</b> {fmt_ms(res.ort.float_ms)} → {fmt_ms(res.ort.int8_ms)} ms "
             f"(speed-up {res.ort.speedup:.2f}×, real kernels)")
    if (left := res.not_compressed_text()) is not None:
        color = "#b58900" if res.unreachable else "gray"
        lines.append(f"<span style='color:{color}'><b>Not compressed</b> {html.escape(left)}</span>")
    lines += [f"<span style='color:#b58900'>⚠ {w}</span>" for w in res.warnings]
    return "<br>".join(lines)


def config_text(kind: str, res: CompressResult, profile: Profile | None) -> tuple[str | None, str | None]:
    """(the ``kind`` config for what was applied, or None with why not)."""
    if kind == "ort":
        if res.ort is None:
            return None, ("The ONNX Runtime arguments are proven by running ORT's quantizer: tick 'measure int8 in "
                          "ONNX Runtime' and Apply again (the plan needs 8-bit quantised layers).")
        return res.ort.config.to_json(), None
    adapter = {"coreml": coreml_configs, "torchao": torchao_config, "nncf": nncf_config, "torch.ao": torch_ao_mapping}[kind]
    if profile is None:
        return None, None
    return json.dumps(adapter(res.resolved, profile.graph), indent=2), None


def _time(ms: float) -> str:
    return f"{ms * 1000:.2f} µs" if ms < 0.01 else f"{fmt_ms(ms)} ms"


def estimate_html(p, plan: CompressionPlan, chosen: frozenset[str]) -> str:
    """The estimate as the panel shows it (pure: runs on any thread)."""
    try:
        resolved, _warnings = resolve_plan(plan, p)
    except LayerScopeError as exc:
        return f"<span style='color:#b58900'>Estimate: {exc}</span>"
    est = estimate_static(p, resolved)
    s = est.selection(chosen)
    lines = [
        f"<b>Estimate</b> (shapes only, instant) for {s.layers} layer(s): weights {fmt_bytes(s.weight_bytes_before)} → "
        f"{fmt_bytes(s.weight_bytes_after)}; whole plan: model weights {est.size_ratio:.3f}× of {fmt_bytes(est.model_weight_bytes)}",
        f"FLOPs {fmt_count(s.flops_before)} → {fmt_count(s.flops_after)}; fastest the roof allows {_time(s.roof_ms_before)} → "
        f"{_time(s.roof_ms_after)}"
        + (f"; median intensity {s.median_intensity_before:.2f} → {s.median_intensity_after:.2f} FLOP/B"
           if s.median_intensity_before is not None and s.median_intensity_after is not None else ""),
    ]
    lines += [f"<span style='color:#777'>≈ {a}</span>" for a in est.approximate]
    return "<br>".join(lines)
