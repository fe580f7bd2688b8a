import math

import numpy as np
import pytest
import torch
from torch import nn

from layerscope.profiler import drive
from layerscope.profiler.capture import capture
from layerscope.profiler.compare import DiagnosticKind, StreamingHistogram, TensorStats, compare_models, diagnose
from layerscope.profiler.compression import apply_plan
from layerscope.profiler.compression.plan import ResolvedSpec
from layerscope.profiler.errors import ComparisonError
from layerscope.profiler.errorstats import PairStats
from layerscope.profiler.files.data import SampleSet, random_samples


def _samples(shape, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SampleSet(tuple((torch.randn(shape, generator=g),) for _ in range(n)), None, "test")


def _run(model, resolved, samples):
    graph = capture(model, samples.batches[0]).graph
    cand, _ = drive(apply_plan(model, graph, resolved, samples))
    cmp = drive(compare_models(model, cand, samples))
    return cmp, diagnose(cmp, graph, resolved, model), graph


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.branch(x) * 100  # planted: one branch ×100
        return self.head(torch.relu(y + x))


def test_residual_branch_scaled_100x_flags_the_add_naming_both_inputs():
    torch.manual_seed(0)
    model = Residual().eval()
    cmp, diags, graph = _run(model, [ResolvedSpec(lid, 0, "quantize", {"bits": 8, "activations": True}) for lid in ("stem", "branch")],
                             _samples((2, 3, 8, 8)))
    hits = [d for d in diags if d.kind is DiagnosticKind.RANGE_MISMATCH]
    assert len(hits) == 1
    d = hits[0]
    add = next(lid for lid in graph.ids() if graph[lid].op_kind == "add")
    mul = next(lid for lid in graph.ids() if graph[lid].op_kind == "mul")
    assert d.layer_ids == (add, mul, "stem")  # the add, then the dominant input, then the drowned one
    assert f"input '{mul}'" in d.message and "input 'stem'" in d.message and "levels" in d.evidence
    ops = {o.source: o for o in cmp.layer(add).operands}
    assert 30 < ops[mul].absmax / ops["stem"].absmax < 300  # ×100 seen in the measured ranges


def test_outlier_output_channel_under_per_tensor_is_flagged_and_per_channel_fixes_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    with torch.no_grad():
        model[0].weight[5] *= 60  # planted: one outlier output channel
    samples = _samples((4, 16))
    _, diags, _ = _run(model, [ResolvedSpec("0", 0, "quantize", {"bits": 8, "granularity": "per_tensor"})], samples)
    hits = [d for d in diags if d.kind is DiagnosticKind.OUTLIER_CHANNELS]
    assert len(hits) == 1 and hits[0].layer_ids == ("0",) and "channel 5" in hits[0].message
    assert "per_channel" in hits[0].fix
    cmp_t, _, _ = _run(model, [ResolvedSpec("0", 0, "quantize", {"bits": 8, "granularity": "per_tensor"})], samples)
    cmp_c, diags_c, _ = _run(model, [ResolvedSpec("0", 0, "quantize", {"bits": 8, "granularity": "per_channel"})], samples)
    assert not [d for d in diags_c if d.kind is DiagnosticKind.OUTLIER_CHANNELS]
    assert cmp_c.layer("0").sqnr_db > cmp_t.layer("0").sqnr_db + 10  # and the error really drops


def test_quantized_regression_head_is_diagnosed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1)).eval()  # a regression head
    _, diags, _ = _run(model, [ResolvedSpec("2", 0, "quantize", {"bits": 4})], _samples((16, 8)))
    hits = [d for d in diags if d.kind is DiagnosticKind.QUANTIZED_OUTPUT]
    assert len(hits) == 1 and hits[0].layer_ids == ("2",) and "5.6.4" in hits[0].fix


class TwoHeads(nn.Module):
    """A quantised head that is not the last layer compared: its diagnosis must quote its own error."""

    def __init__(self):
        super().__init__()
        self.body, self.head, self.tail = nn.Linear(8, 32), nn.Linear(32, 1), nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return self.head(h), self.tail(h) * 100


def test_quantized_output_diagnosis_quotes_that_layers_own_error():
    torch.manual_seed(0)
    model = TwoHeads().eval()
    cmp, diags, _ = _run(model, [ResolvedSpec("head", 0, "quantize", {"bits": 2})], _samples((16, 8)))
    head = cmp.layer("head")
    assert [lc.layer_id for lc in cmp.layers][-1] != "head"
    (hit,) = [d for d in diags if d.kind is DiagnosticKind.QUANTIZED_OUTPUT]
    assert f"max |error| {head.max_abs_error:.3g} on outputs in [{head.reference.min:.3g}, {head.reference.max:.3g}]" in hit.evidence


def test_model_against_itself_is_exact():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    cmp = drive(compare_models(model, model, _samples((1, 3, 6, 6), 2)))
    assert all(lc.sqnr_db == math.inf and lc.max_abs_error == 0 and lc.cosine == pytest.approx(1.0) for lc in cmp.layers)
    assert cmp.first_below(20) is None and diagnose(cmp, capture(model, (torch.randn(1, 3, 6, 6),)).graph) == []


def test_sqnr_of_a_known_quantizer_matches_the_hand_value():
    # x = [1, 2, 3, 4], step 1.5 symmetric rounding -> [1.5, 1.5, 3, 4.5]; noise = .25+.25+0+.25 = .75; signal = 30
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    q = torch.round(x / 1.5) * 1.5
    p = PairStats()
    p.add(x[:2], q[:2])
    p.add(x[2:], q[2:])
    assert p.sqnr_db == pytest.approx(10 * math.log10(30 / 0.75))  # 16.02 dB
    assert p.mse == pytest.approx(0.75 / 4) and p.max_abs == pytest.approx(0.5)


def test_streaming_stats_over_10_batches_equal_the_concatenated_batch():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(64, 8, generator=g) * (1 + k) + k for k in range(10)]  # ranges grow batch by batch
    streamed, whole = TensorStats(), TensorStats()
    for b in batches:
        streamed.add(b)
    whole.add(torch.cat(batches))
    s, w = streamed.freeze(), whole.freeze()
    assert (s.count, s.min, s.max) == (w.count, w.min, w.max)
    assert s.mean == pytest.approx(w.mean) and s.std == pytest.approx(w.std)
    assert s.channel_min == pytest.approx(w.channel_min) and s.channel_max == pytest.approx(w.channel_max)
    res = max(s.hist_width, w.hist_width)
    for q in ("1.0", "50.0", "99.0"):
        assert abs(s.percentiles[q] - w.percentiles[q]) <= 2 * res  # within histogram resolution
    exact = np.percentile(torch.cat(batches).numpy(), 99.0)
    assert abs(s.percentiles["99.0"] - exact) <= 2 * res
    assert sum(s.hist_counts) == 5120 and len(s.hist_counts) == 1024  # memory: fixed bins, whatever the sample count


def test_histogram_growth_merges_bins_exactly():
    h = StreamingHistogram(8)
    h.add(torch.tensor([0.0, 1.0]))
    h.add(torch.tensor([-3.0, 7.5]))
    assert h.total == 4 and h.lo <= -3 and h.hi >= 7.5
    edges = h.edges()
    for v in (0.0, 1.0, -3.0, 7.5):  # every value sits in a non-empty bin whose closed interval holds it
        assert any(h.counts[k] and edges[k] <= v <= edges[k + 1] for k in range(8))
    assert h.width == pytest.approx(0.125 * 2 ** 4)  # four doublings, no re-binning error


def test_nan_is_reported_with_the_layer_where_it_first_appears():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    bad = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    bad.load_state_dict(model.state_dict())
    with torch.no_grad():
        bad[2].bias[0] = float("nan")
    with pytest.raises(ComparisonError, match=r"NaN/Inf reach the candidate model's output at layer '2' \(Linear\) on batch 0: 2 of 4 values\. "):
        drive(compare_models(model, bad, _samples((2, 4), 1)))
    with torch.no_grad():
        bad[2].bias[0] = 0.0
        bad[0].bias[1] = float("inf")  # through the ReLU into layer 2: named where it first appears
    with pytest.raises(ComparisonError, match=r"at layer '2' .*; they first appear at layer '0' \(Linear\)\. Check the weights and inputs of layer '0'"):
        drive(compare_models(model, bad, _samples((2, 4), 1)))


def test_data_that_does_not_fit_is_a_clear_error():
    from layerscope.profiler import LayerScopeError

    model = nn.Sequential(nn.Linear(4, 2)).eval()
    with pytest.raises(LayerScopeError, match=r"inputs \[\(2, 5\) float32\] failed at layer '0'"):
        drive(compare_models(model, model, _samples((2, 5), 1)))


def test_pruned_unstructured_dead_channels_and_structured_shape_change(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).eval()
    with torch.no_grad():
        model[0].weight[:3] *= 1e-3  # three weak filters: magnitude pruning removes them entirely
        model[0].bias.zero_()
    _, diags, _ = _run(model, [ResolvedSpec("0", 0, "prune", {"sparsity": 0.375})], random_samples((torch.zeros(1, 3, 8, 8),), 3))
    dead = [d for d in diags if d.kind is DiagnosticKind.DEAD_CHANNELS]
    assert len(dead) == 1 and dead[0].layer_ids == ("0",) and "3 of 8" in dead[0].message


@pytest.mark.toolchain
def test_sqnr_agrees_with_ort_qdq_loss_debug_on_the_same_tensors(tmp_path):
    from layerscope.profiler import load_device_profile, load_model, profile_model
    from layerscope.profiler.compression import CompressionPlan, LayerSpec, quantize_with_ort, resolve_plan
    from layerscope.profiler.files.data import builtin_samples
    from layerscope.profiler.runtimes.onnx import ort_sqnr_check

    loaded = load_model("digits_cnn")
    profile = drive(profile_model(loaded, load_device_profile("raspberry-pi-5"), runs=1, warmup=0))
    samples = builtin_samples("digits", batch_size=120)
    resolved, _ = resolve_plan(CompressionPlan((LayerSpec("all", "quantize", {"bits": 8, "activations": True}),)), profile)
    res = drive(quantize_with_ort(loaded.module, profile.graph, resolved, samples, tmp_path, runs=1))
    checks = ort_sqnr_check(res.float_onnx, res.int8_onnx, samples, profile.graph)
    by_layer = {c.layer_id: c for c in checks if c.layer_id}
    assert {"fc1", "fc2", "pool", "relu"} <= set(by_layer)  # tensors named by the layers that made them
    for c in checks:
        assert abs(c.layerscope_db - c.ort_db) < 0.5, c


class _Block(nn.Module):
    """A BERT-like layer: projections with residual adds around them, and a LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.o, self.ff, self.ln = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32), nn.LayerNorm(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.o(torch.relu(self.q(x))) + x)
        return self.ff(h) + h


class _Encoder(nn.Module):
    def __init__(self, blocks: int = 2) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_Block() for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.layer:
            x = b(x)
        return x


def test_quantized_activations_keep_every_residual_add_in_the_comparison():
    """torch.export traces the fake-quant hooks, whose nodes shift the counters in the candidate's node names
    (``layer.0.add`` becomes ``layer.0.add_2``): layers are matched by module path, op kind and order instead of by
    id, so every residual add is compared (with ids, all four were silently left out)."""
    from helpers import plan_of

    from layerscope.profiler import load_device_profile
    from layerscope.profiler.compare import compare_models
    from layerscope.profiler.compression import apply_plan, resolve_plan
    from layerscope.profiler.files.data import random_samples
    from layerscope.profiler.files.source import LoadedModel
    from layerscope.profiler.graph import CaptureMethod
    from layerscope.profiler.pipeline import profile_model

    torch.manual_seed(0)
    model, x = _Encoder().eval(), torch.randn(2, 8, 32)
    loaded = LoadedModel("encoder", "encoder", "module", model, (x,))
    profile = drive(profile_model(loaded, load_device_profile("raspberry-pi-5"), runs=1, warmup=0, method=CaptureMethod.EXPORT))
    resolved, warnings = resolve_plan(plan_of(("type:Linear", "quantize", {"bits": 8, "activations": True})), profile)
    samples = random_samples((x,), 2)
    candidate, applied = drive(apply_plan(model, profile.graph, resolved, samples, warnings))
    assert applied.activations  # the hooks are in place
    cmp = drive(compare_models(model, candidate, samples, method=CaptureMethod.EXPORT))
    adds = [lid for lid in profile.graph.ids() if profile.graph[lid].op_kind == "add"]
    compared = {lc.layer_id: lc for lc in cmp.layers}
    assert len(adds) == 4 and all(a in compared and compared[a].sqnr_db is not None for a in adds)
    assert cmp.unmatched == () and cmp.summary()["layers_unmatched"] == []


def test_a_layer_without_a_counterpart_is_listed_not_dropped():
    from layerscope.profiler.compare import compare_models
    from layerscope.profiler.files.data import random_samples

    torch.manual_seed(0)
    one, two = _Encoder(blocks=1).eval(), _Encoder(blocks=2).eval()
    two.layer[0].load_state_dict(one.layer[0].state_dict())
    samples = random_samples((torch.randn(2, 8, 32),), 1)
    cmp = drive(compare_models(two, one, samples))
    assert cmp.unmatched and all(lid.startswith("layer.1.") for lid in cmp.unmatched)
    assert any(f"{len(cmp.unmatched)} layer(s) of reference have no counterpart" in n for n in cmp.notes)
    assert cmp.summary()["layers_unmatched"] == list(cmp.unmatched)
    assert {lc.layer_id for lc in cmp.layers} & set(cmp.unmatched) == set()
