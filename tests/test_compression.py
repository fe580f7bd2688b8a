"""Compression techniques by hand, plans: resolving, applying (never in place), estimating, pruning."""

import pytest
import torch
from helpers import plan_of

from layerscope.profiler import PlanError, drive, load_device_profile, profile_model
from layerscope.profiler.compression import CompressionPlan, apply_plan, compress, palettize_weight, prune_weight, quantize_weight, resolve_plan, sqnr_db
from layerscope.profiler.compression.activations import calibrate_activations
from layerscope.profiler.files.data import random_samples


# --------------------------------------------------------------------------- techniques, by hand
def test_per_channel_int8_error_is_at_most_half_a_step():
    # rows with very different ranges: per-channel gives each its own scale = max|row| / 127
    w = torch.stack([torch.linspace(-1, 1, 16) * s for s in (0.01, 0.5, 3.0, 100.0)])
    w_hat, rep = quantize_weight(w, bits=8, granularity="per_channel")
    scale = w.abs().amax(1, keepdim=True) / 127
    assert torch.all((w - w_hat).abs() <= scale / 2 + 1e-7)
    assert torch.allclose(torch.round(w_hat / scale), w_hat / scale, atol=1e-4)  # every value is an integer multiple of its scale
    assert rep.storage_bits == 64 * 8 + 4 * 32  # 8-bit codes + one float32 scale per row
    assert rep.bits_per_weight == pytest.approx(10.0)  # 640 bits / 64 weights
    # the same tensor per tensor: the small rows lose almost everything
    _, per_tensor = quantize_weight(w, bits=8, granularity="per_tensor")
    assert per_tensor.sqnr_db < rep.sqnr_db


def test_int4_group_and_asymmetric_storage():
    w = torch.randn(8, 64)
    _, rep = quantize_weight(w, bits=4, granularity="group", group_size=32)
    assert rep.storage_bits == 512 * 4 + 16 * 32  # 16 groups of 32, one fp32 scale each
    _, asym = quantize_weight(w, bits=4, symmetric=False, granularity="per_tensor")
    assert asym.unique_values <= 16 and asym.storage_bits == 512 * 4 + 32 + 4


def test_4bit_palettization_leaves_at_most_16_values_per_lut():
    torch.manual_seed(0)
    w = torch.randn(32, 16, 3, 3)
    w_hat, rep = palettize_weight(w, bits=4)
    assert torch.unique(w_hat).numel() <= 16 and rep.unique_values <= 16
    assert rep.storage_bits == w.numel() * 4 + 16 * 16  # 4-bit indices + one 16-entry fp16 LUT
    w_hat8, rep8 = palettize_weight(w, bits=4, channels_per_lut=8)  # 4 LUTs of 8 channels
    for block in w_hat8.split(8):
        assert torch.unique(block).numel() <= 16
    assert rep8.storage_bits == w.numel() * 4 + 4 * 16 * 16
    assert rep8.sqnr_db >= rep.sqnr_db - 0.1  # more LUTs fit at least as well


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.7, 0.95])
def test_unstructured_pruning_hits_exact_sparsity(sparsity):
    w = torch.ones(10, 100)  # all ties: a non-stable rule would zero too many or too few
    w_hat, rep = prune_weight(w, sparsity)
    assert rep.nonzeros == 1000 - round(sparsity * 1000) == int(torch.count_nonzero(w_hat))
    w = torch.randn(10, 100)
    w_hat, _ = prune_weight(w, 0.7)
    kept = w_hat != 0
    assert kept.sum() == 300 and w.abs()[kept].min() >= w.abs()[~kept].max()  # the smallest magnitudes went


def test_sqnr_of_identical_is_infinite_and_of_known_noise_is_exact():
    x = torch.tensor([3.0, 4.0])
    assert sqnr_db(x, x) == float("inf")
    assert sqnr_db(x, x + torch.tensor([0.3, 0.4])) == pytest.approx(20.0)  # 10*log10(25 / 0.25)


# --------------------------------------------------------------------------- plans
@pytest.mark.parametrize("specs,model,expected", [
    ([("conv9", "quantize", {})], None, "spec 0 (select 'conv9'): matches no layer"),
    ([("glob:layer9.*", "quantize", {})], None, "matches no layer"),
    ([("type:Conv2d", "quantize", {"bits": 9})], None, "field 'params.bits' is 9; it must be an integer from 2 to 8"),
    ([("type:Conv2d", "quantize", {"bitz": 4})], None, "field 'params.bitz' is not a quantize parameter"),
    ([("type:Conv2d", "squash", {})], None, "field 'technique' is 'squash'"),
    ([("type:Conv2d", "quantize", {}), ("bn1", "palettize", {})], None,
     "spec 1 (select 'bn1'): technique 'palettize' does not apply to layer 'bn1' (BatchNorm2d)"),
    ([("type:Conv2d", "prune", {"sparsity": 1.0})], None, "must be a number in [0, 1)"),
    ([("fc", "prune_channels", {"amount": 0.5})], None, "would change the shape of the model's output"),
    ([("glob:f*", "prune_channels", {"amount": 0.5})], None, "matches only the model's output layer(s) (fc)"),
    ([("type:Conv2d", "quantize", {})], "resnet18", "This plan is for model 'resnet18', not 'tiny_cnn'"),
    ([("re:(", "quantize", {})], None, "bad regular expression"),
])
def test_plan_validation_names_spec_field_and_layer(tiny, specs, model, expected):
    loaded, profile, _ = tiny
    with pytest.raises(PlanError) as e:
        resolve_plan(plan_of(*specs, model=model), profile)
    assert expected in str(e.value)


@pytest.mark.parametrize("text,expected", [
    ("{", "not valid JSON"),
    ('{"version": 2, "specs": []}', "field 'version' is 2"),
    ('{"version": 1, "specs": [{"select": "x"}]}', "spec 0: field 'technique' is missing"),
    ('{"version": 1, "specs": [{"select": "x", "technique": "quantize", "parms": {}}]}', "unknown field(s) parms"),
])
def test_malformed_plan_json(text, expected):
    with pytest.raises(PlanError) as e:
        CompressionPlan.from_json(text, origin="p.json")
    assert expected in str(e.value) and "p.json" in str(e.value)


def test_selectors_and_override_order(tiny):
    _, profile, _ = tiny
    plan = plan_of(("all", "quantize", {"bits": 8}), ("fc", "cast", {"dtype": "float16"}),
                 ("conv1", "prune_channels", {"amount": 0.5}))
    resolved, warnings = resolve_plan(plan, profile)
    by = {(r.layer_id, r.technique) for r in resolved}
    assert ("fc", "cast") in by and ("fc", "quantize") not in by  # later spec wins
    assert ("conv1", "quantize") in by and ("conv1", "prune_channels") in by  # structure composes
    assert resolved[0].technique == "prune_channels"  # structure first
    assert warnings == []  # cast is not quantisation
    _, warnings = resolve_plan(plan_of(("all", "quantize", {"bits": 8})), profile)
    assert len(warnings) == 1 and warnings[0].startswith("fc: this is the model's output layer")
    assert CompressionPlan.from_json(plan.to_json()) == plan


def test_apply_never_changes_the_original(tiny):
    loaded, profile, _ = tiny
    before = {k: v.clone() for k, v in loaded.module.state_dict().items()}
    resolved, w = resolve_plan(plan_of(("all", "palettize", {"bits": 2})), profile)
    cand, res = drive(apply_plan(loaded.module, profile.graph, resolved, random_samples(loaded.inputs, 2), w))
    assert all(torch.equal(before[k], v) for k, v in loaded.module.state_dict().items())
    assert all(torch.unique(m.weight).numel() <= 4 for m in cand.modules() if isinstance(m, torch.nn.Conv2d))
    assert res.size_bytes_after < res.size_bytes_before and res.simulated


def test_structured_pruning_really_removes_channels(tiny):
    loaded, profile, hw = tiny
    plan = plan_of(("type:Conv2d", "prune_channels", {"amount": 0.5, "norm": "l2"}))
    out = drive(compress(loaded, profile, plan, random_samples(loaded.inputs, 2), hw, runs=2))
    rep = out
    assert [(c.channels_before, c.channels_after) for c in rep.channels] == [(16, 8), (32, 16)]
    assert out.candidate.conv1.out_channels == 8 and out.candidate.bn1.num_features == 8  # BN repaired
    assert out.candidate.conv2.in_channels == 8 and out.candidate.fc.in_features == 16  # next layers repaired
    assert out.candidate(*loaded.inputs).shape == loaded.module(*loaded.inputs).shape
    assert rep.flops_after < 0.5 * rep.flops_before
    assert not rep.simulated and rep.size_bytes_after < rep.size_bytes_before


class _DictOut(torch.nn.Module):
    """A model that returns a dict, as Hugging Face models return a ModelOutput (GPT-2's CausalLMOutput)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return {"logits": self.b(h), "pooled": x.mean(-1)}


def test_channel_pruning_a_model_that_returns_a_dict():
    from layerscope.profiler.files.source import LoadedModel

    model = _DictOut().eval()
    loaded = LoadedModel("dict_out", "dict_out", "factory", model, (torch.randn(2, 8),))
    hw = load_device_profile("raspberry-pi-5")
    profile = drive(profile_model(loaded, hw, runs=2, warmup=1))
    out = drive(compress(loaded, profile, plan_of(("a", "prune_channels", {"amount": 0.5})), random_samples(loaded.inputs, 2), hw, runs=2))
    assert out.candidate.a.out_features == 8 and out.candidate.b.in_features == 8  # was: AttributeError 'dict' has no 'shape'


def test_activation_calibration_methods_clip_outliers():
    torch.manual_seed(0)
    x = torch.randn(32, 64)
    x[0, 0] = 80.0  # one outlier
    res = {m: calibrate_activations(torch.nn.Sequential(torch.nn.Linear(64, 4)).eval(), [("0", "0", m, 99.9)], [(x,)])[0]
           for m in ("minmax", "percentile", "mse")}
    assert res["minmax"].clip_rate == 0 and res["minmax"].range_max == pytest.approx(80.0, abs=res["minmax"].scale)
    assert res["percentile"].range_max < 10 and 0 < res["percentile"].clip_rate < 0.002
    assert res["mse"].range_max == pytest.approx(80.0, abs=1.0)  # one outlier: clipping it costs more than it saves
    # heavy tails (Student-t, 2 dof): MSE clips the range and beats min/max on error
    torch.manual_seed(0)
    t = torch.distributions.StudentT(torch.tensor(2.0)).sample((64, 64))
    heavy = {m: calibrate_activations(torch.nn.Sequential(torch.nn.Linear(64, 4)).eval(), [("0", "0", m, 99.9)], [(t,)])[0]
             for m in ("minmax", "mse")}
    assert heavy["mse"].range_max < heavy["minmax"].range_max and heavy["mse"].sqnr_db > heavy["minmax"].sqnr_db
