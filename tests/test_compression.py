import json

import numpy as np
import pytest
import torch

from layerscope.profiler import PlanError, drive, load_device_profile, load_model, profile_model
from layerscope.profiler.compression import (
    CompressionPlan,
    LayerSpec,
    apply_plan,
    build_qconfig_mapping,
    compress,
    coreml_configs,
    palettize_weight,
    prune_weight,
    quantize_weight,
    quantize_with_ort,
    resolve_plan,
    sqnr_db,
    torch_ao_mapping,
)
from layerscope.profiler.compression.activations import calibrate_activations
from layerscope.profiler.errors import InputSpecError
from layerscope.profiler.files.data import builtin_samples, load_data_folder, random_samples


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
@pytest.fixture(scope="module")
def tiny():
    from layerscope.profiler import load_device_profile

    hw = load_device_profile("raspberry-pi-5")
    loaded = load_model("tiny_cnn")
    return loaded, drive(profile_model(loaded, hw, runs=2, warmup=1)), hw


def _plan(*specs, model=None):
    return CompressionPlan(tuple(LayerSpec(*s) for s in specs), model=model)


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
        resolve_plan(_plan(*specs, model=model), profile)
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
    plan = _plan(("all", "quantize", {"bits": 8}), ("fc", "cast", {"dtype": "float16"}),
                 ("conv1", "prune_channels", {"amount": 0.5}))
    resolved, warnings = resolve_plan(plan, profile)
    by = {(r.layer_id, r.technique) for r in resolved}
    assert ("fc", "cast") in by and ("fc", "quantize") not in by  # later spec wins
    assert ("conv1", "quantize") in by and ("conv1", "prune_channels") in by  # structure composes
    assert resolved[0].technique == "prune_channels"  # structure first
    assert warnings == []  # cast is not quantisation
    _, warnings = resolve_plan(_plan(("all", "quantize", {"bits": 8})), profile)
    assert len(warnings) == 1 and warnings[0].startswith("fc: this is the model's output layer")
    assert CompressionPlan.from_json(plan.to_json()) == plan


def test_apply_never_changes_the_original(tiny):
    loaded, profile, _ = tiny
    before = {k: v.clone() for k, v in loaded.module.state_dict().items()}
    resolved, w = resolve_plan(_plan(("all", "palettize", {"bits": 2})), profile)
    cand, res = drive(apply_plan(loaded.module, profile.graph, resolved, random_samples(loaded.inputs, 2), w))
    assert all(torch.equal(before[k], v) for k, v in loaded.module.state_dict().items())
    assert all(torch.unique(m.weight).numel() <= 4 for m in cand.modules() if isinstance(m, torch.nn.Conv2d))
    assert res.size_bytes_after < res.size_bytes_before and res.simulated


def test_structured_pruning_really_removes_channels(tiny):
    loaded, profile, hw = tiny
    plan = _plan(("type:Conv2d", "prune_channels", {"amount": 0.5, "norm": "l2"}))
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
    out = drive(compress(loaded, profile, _plan(("a", "prune_channels", {"amount": 0.5})), random_samples(loaded.inputs, 2), hw, runs=2))
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


# --------------------------------------------------------------------------- real toolchains
@pytest.mark.toolchain
def test_ort_quantizer_accepts_the_adapter_output(tiny, tmp_path):
    import onnx

    loaded, profile, _ = tiny
    resolved, _ = resolve_plan(_plan(("type:Conv2d", "quantize", {"bits": 8, "activations": True, "act_calibration": "percentile"}),
                                     ("fc", "palettize", {"bits": 4})), profile)
    res = drive(quantize_with_ort(loaded.module, profile.graph, resolved, random_samples(loaded.inputs, 2), tmp_path, runs=3))
    cfg = res.config
    assert cfg.mode == "static" and cfg.calibrate_method == "Percentile" and set(cfg.layer_nodes) == {"conv1", "conv2"}
    assert any("fc: palettize" in c for c in cfg.cannot_express)
    q = onnx.load(res.int8_onnx)
    dq_consumers = {n.name for n in q.graph.node if any(i.endswith("_DequantizeLinear_Output") for i in n.input)}
    assert set(cfg.nodes_to_quantize) <= dq_consumers  # ORT put QDQ around exactly the nodes we named
    assert res.output_sqnr_db > 15 and res.int8_ms > 0
    # weights-only plan -> dynamic quantisation
    resolved, _ = resolve_plan(_plan(("all", "quantize", {"bits": 8})), profile)
    res = drive(quantize_with_ort(loaded.module, profile.graph, resolved, random_samples(loaded.inputs, 1), tmp_path / "d", runs=2))
    assert res.config.mode == "dynamic" and res.quantized_nodes == 2 and set(res.config.layer_nodes) == {"conv1", "conv2"}
    assert any(c.startswith("fc: ONNX Gemm has no ORT dynamic int8 kernel") for c in res.config.cannot_express)
    assert 15 < res.output_sqnr_db < float("inf")


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_torch_ao_mapping_is_a_working_qconfig_mapping():
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from layerscope.profiler.capture import capture
    from layerscope.profiler.compression.plan import ResolvedSpec

    model = load_model("digits_cnn").module
    x = builtin_samples("digits").batches[0][0]
    graph = capture(model, (x[:1],)).graph

    resolved = [ResolvedSpec("conv2", 0, "quantize", {"bits": 8, "activations": True}),
                ResolvedSpec("fc1", 0, "quantize", {"bits": 8, "granularity": "per_tensor", "activations": True}),
                ResolvedSpec("fc2", 1, "palettize", {"bits": 4})]
    desc = torch_ao_mapping(resolved, graph)
    assert set(desc["module_name"]) == {"conv2", "fc1"} and "fc2: palettize" in desc["cannot_express"][0]
    mapping = build_qconfig_mapping(resolved, graph)
    import copy

    prepared = prepare_fx(copy.deepcopy(model), mapping, (x[:1],))
    prepared(x)
    converted = convert_fx(prepared)
    assert "quantized" in type(converted.conv2).__module__
    assert "quantized" in type(converted.fc1).__module__ and type(converted.fc2) is torch.nn.Linear
    assert torch.nn.functional.cosine_similarity(converted(x).reshape(-1), model(x).reshape(-1), dim=0) > 0.99


def test_coreml_configs_by_technique():
    from layerscope.profiler.compression.plan import ResolvedSpec

    cfg = coreml_configs([ResolvedSpec("a", 0, "quantize", {"bits": 4, "granularity": "group", "group_size": 16}),
                          ResolvedSpec("b", 0, "palettize", {"bits": 6, "channels_per_lut": 8}),
                          ResolvedSpec("c", 0, "prune", {"sparsity": 0.75}),
                          ResolvedSpec("d", 0, "cast", {"dtype": "float16"})])
    assert cfg["PostTrainingQuantizerConfig"]["module_name_configs"]["a"] == {
        "weight_dtype": "int4", "granularity": "per_block", "quantization_scheme": "symmetric", "block_size": 16}
    assert cfg["PostTrainingPalettizerConfig"]["module_name_configs"]["b"] == {"n_bits": 6, "granularity": "per_grouped_channel", "group_size": 8}
    assert cfg["MagnitudePrunerConfig"]["module_name_configs"]["c"]["target_sparsity"] == 0.75
    assert len(cfg["cannot_express"]) == 1 and cfg["cannot_express"][0].startswith("d: cast")
    json.dumps(cfg)


@pytest.mark.toolchain
def test_coreml_configs_run_in_coremltools():
    """The Core ML export is proven by coremltools (optional extra): each dict goes through its config class's
    from_dict, and the post-training quantizer, palettizer and pruner compress exactly the named layers."""
    pytest.importorskip("coremltools")
    import copy

    from coremltools.optimize.torch.palettization import PostTrainingPalettizer, PostTrainingPalettizerConfig
    from coremltools.optimize.torch.pruning import MagnitudePruner, MagnitudePrunerConfig
    from coremltools.optimize.torch.quantization import PostTrainingQuantizer, PostTrainingQuantizerConfig

    from layerscope.profiler.capture import capture
    from layerscope.profiler.compression.plan import ResolvedSpec

    model = load_model("digits_cnn").module
    graph = capture(model, (torch.zeros(1, 1, 8, 8),)).graph
    cfg = json.loads(json.dumps(coreml_configs([
        ResolvedSpec("conv2", 0, "quantize", {"bits": 4, "granularity": "group", "group_size": 16}),
        ResolvedSpec("conv3", 1, "palettize", {"bits": 4}),
        ResolvedSpec("fc2", 1, "palettize", {"bits": 2, "channels_per_lut": 2}),
        ResolvedSpec("fc1", 2, "prune", {"sparsity": 0.5})], graph)))  # exactly what --export-coreml writes
    q = PostTrainingQuantizer(copy.deepcopy(model), PostTrainingQuantizerConfig.from_dict(cfg["PostTrainingQuantizerConfig"])).compress()
    blocks = q.conv2.weight.detach().reshape(32, 16, 9).permute(0, 2, 1)  # per output channel, blocks of 16 input channels
    assert max(b.unique().numel() for row in blocks for b in row) <= 16 and torch.equal(q.conv1.weight, model.conv1.weight)
    p = PostTrainingPalettizer(copy.deepcopy(model), PostTrainingPalettizerConfig.from_dict(cfg["PostTrainingPalettizerConfig"])).compress()
    assert p.conv3.weight.unique().numel() <= 16 and all(p.fc2.weight[i:i + 2].unique().numel() <= 4 for i in range(0, 10, 2))
    pruner = MagnitudePruner(copy.deepcopy(model), MagnitudePrunerConfig.from_dict(cfg["MagnitudePrunerConfig"]))
    pruner.prepare(inplace=True)
    pruner.step()
    pruned = pruner.finalize(inplace=False)
    assert float((pruned.fc1.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_digits_accuracy_before_and_after_int8():
    from layerscope.profiler import load_device_profile
    from layerscope.profiler.compression import estimate_plan

    hw = load_device_profile("raspberry-pi-5")
    loaded = load_model("digits_cnn")
    profile = drive(profile_model(loaded, hw, runs=2, warmup=1))
    out = drive(compress(loaded, profile, estimate_plan("int8", "digits_cnn"), builtin_samples("digits"), hw, runs=2))
    o = out.output
    assert o.samples == 360 and o.accuracy_reference > 0.95  # the shipped model is really trained
    assert abs(o.accuracy_candidate - o.accuracy_reference) < 0.02  # int8 costs < 2 points
    assert out.size_ratio < 0.3


# --------------------------------------------------------------------------- data folders
def test_data_folder_loading_and_errors(tmp_path):
    like = (torch.zeros(1, 1, 8, 8),)
    (tmp_path / "d").mkdir()
    for k in range(3):
        np.savez(tmp_path / "d" / f"b{k}.npz", x=np.random.rand(5, 1, 8, 8).astype(np.float32), y=np.arange(5))
    torch.save({"x": torch.rand(2, 1, 8, 8), "y": torch.tensor([1, 2])}, tmp_path / "d" / "b3.pt")
    s = load_data_folder(tmp_path / "d", like)
    assert s.n_samples == 17 and s.labelled and len(s.batches) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputSpecError, match="has no .npz or .pt files"):
        load_data_folder(tmp_path / "empty", like)
    np.savez(tmp_path / "d" / "b9.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(InputSpecError, match=r"b9.npz: input of shape \(2, 3, 8, 8\) does not fit"):
        load_data_folder(tmp_path / "d", like)


def test_int8_activations_skip_an_embeddings_token_ids():
    from layerscope.profiler.capture import capture
    from layerscope.profiler.compression.plan import ResolvedSpec

    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 4)).eval()
    tokens = torch.randint(0, 50, (2, 6))
    graph = capture(model, (tokens,)).graph
    resolved = [ResolvedSpec(lid, 0, "quantize", {"bits": 8, "activations": True}) for lid in ("0", "1")]
    _, res = drive(apply_plan(model, graph, resolved, random_samples((tokens,), 2, high=50)))
    assert [c.layer_id for c in res.weights] == ["0", "1"] and [a.layer_id for a in res.activations] == ["1"]


def test_adapter_groups_what_it_cannot_express(tiny):
    _, profile, _ = tiny
    resolved, _ = resolve_plan(_plan(("all", "palettize", {"bits": 4})), profile)
    cfg = coreml_configs(resolved)
    assert cfg["cannot_express"] == [] and len(cfg["PostTrainingPalettizerConfig"]["module_name_configs"]) == 3
    ao = torch_ao_mapping(resolved, profile.graph)
    assert len(ao["cannot_express"]) == 1 and ao["cannot_express"][0].startswith("3 layers (conv1, conv2, fc): palettize(bits=4)")


def test_static_estimate_matches_the_techniques_storage(tiny_profile):
    """The instant estimate uses the techniques' own accounting: for weight-only techniques it is
    what Apply reports, bit for bit."""
    from layerscope.profiler import load_model
    from layerscope.profiler.compression import CompressionPlan, LayerSpec, estimate_static, resolve_plan
    from layerscope.profiler.compression.techniques import palettize_weight, prune_weight, quantize_weight

    module = load_model("tiny_cnn").module
    w = module.conv2.weight.detach()
    bias_bytes = 0  # conv2 has no bias
    cases = [
        ("quantize", {"bits": 4, "granularity": "per_channel"}, quantize_weight(w, 4, granularity="per_channel")[1]),
        ("quantize", {"bits": 8, "granularity": "per_tensor"}, quantize_weight(w, 8, granularity="per_tensor")[1]),
        ("palettize", {"bits": 2}, palettize_weight(w, 2)[1]),
        ("prune", {"sparsity": 0.7}, prune_weight(w, 0.7)[1]),
    ]
    for tech, params, report in cases:
        plan = CompressionPlan((LayerSpec("conv2", tech, params),), model=tiny_profile.model.name)
        est = estimate_static(tiny_profile, resolve_plan(plan, tiny_profile)[0])
        (layer,) = est.layers
        assert layer.weight_bytes_after == report.bytes_after + bias_bytes, (tech, params)
        assert layer.weight_bytes_before == report.bytes_before + bias_bytes
        assert est.flops_after == est.flops_before  # weight techniques keep the FLOPs
        assert layer.roof_ms_after <= layer.roof_ms_before  # fewer bytes: the roof bound can only drop
    plan = CompressionPlan((LayerSpec("conv2", "prune_channels", {"amount": 0.5}),), model=tiny_profile.model.name)
    est = estimate_static(tiny_profile, resolve_plan(plan, tiny_profile)[0])
    assert est.flops_after < est.flops_before and est.approximate  # says what it cannot know


def test_technique_specs_own_defaults_ranges_and_rules():
    from layerscope.profiler.compression.specs import Granularity, PalettizeParams, QuantizeParams, default, limits, parse_params
    q = parse_params("quantize", {"bits": 4, "granularity": "group", "group_size": 64})
    assert isinstance(q, QuantizeParams) and q.granularity is Granularity.GROUP and q.symmetric is True
    assert q.describe() == "bits=4, symmetric=True, granularity=group, group_size=64, activations=False"
    assert parse_params("palettize", {}) == PalettizeParams() and default("palettize", "bits") == 4
    assert 8 in limits("quantize", "bits") and 9 not in limits("quantize", "bits")
    assert 0 in limits("prune", "sparsity") and 1 not in limits("prune", "sparsity")
    assert 0 not in limits("prune_channels", "amount")
    for bad, field in [({"bits": 9}, "params.bits"), ({"bits": True}, "params.bits"), ({"granularity": "row"}, "params.granularity"),
                       ({"act_percentile": float("nan")}, "params.act_percentile"), ({"nope": 1}, "params.nope")]:
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            parse_params("quantize", bad)
    # the cross-field rule the app used to enforce alone: int8 activations need int8 weights
    with pytest.raises(ValueError, match="bits=8"):
        parse_params("quantize", {"bits": 4, "activations": True})
    with pytest.raises(PlanError, match="spec 0.*bits=8"):
        CompressionPlan.from_data({"version": 1, "specs": [{"select": "all", "technique": "quantize",
                                                            "params": {"bits": 4, "activations": True}}]})


@pytest.mark.toolchain
def test_torchao_config_runs_in_torchao_on_conv_linear_and_embedding():
    """The export is proven by torchao itself (optional extra): quantize_ with the FqnToConfig LayerScope wrote
    replaces exactly the plan's layers, conv and embedding included, and digits_cnn keeps its accuracy."""
    pytest.importorskip("torchao")
    import copy

    from layerscope.profiler.capture import capture
    from layerscope.profiler.compression import apply_torchao, torchao_config
    from layerscope.profiler.compression.plan import ResolvedSpec

    model = load_model("digits_cnn").module
    samples = builtin_samples("digits")
    graph = capture(model, (samples.batches[0][0][:1],)).graph
    resolved = [ResolvedSpec("conv1", 0, "quantize", {"bits": 8}),  # 1 input channel: torchao 0.18's intx conv breaks
                ResolvedSpec("conv2", 0, "quantize", {"bits": 8, "granularity": "per_tensor"}),
                ResolvedSpec("conv3", 1, "quantize", {"bits": 4}),
                ResolvedSpec("fc1", 2, "quantize", {"bits": 8, "activations": True}),
                ResolvedSpec("fc2", 3, "quantize", {"bits": 4, "granularity": "group", "group_size": 32})]
    cfg = json.loads(json.dumps(torchao_config(resolved, graph)))  # exactly what --export-torchao writes
    assert set(cfg["fqn_to_config"]) == {"conv2", "conv3", "fc1", "fc2"}
    assert cfg["fqn_to_config"]["fc1"]["config"] == "Int8DynamicActivationIntxWeightConfig"
    assert cfg["fqn_to_config"]["fc2"]["granularity"] == {"PerGroup": 32}
    assert "conv2, conv3" in cfg["not_linear"][0] and cfg["cannot_express"][0].startswith("conv1 (Conv2d, weight [16, 1, 3, 3])")
    assert any(a.startswith("conv2: per_tensor") for a in cfg["approximations"])
    q = copy.deepcopy(model)
    assert sorted(apply_torchao(q, cfg)) == ["conv2", "conv3", "fc1", "fc2"]  # torchao's default filter would take fc1, fc2 only
    p_cfg = torchao_config([ResolvedSpec("conv3", 0, "quantize", {"bits": 4, "granularity": "group", "group_size": 32}),
                            ResolvedSpec("fc2", 1, "palettize", {"bits": 4})], graph)
    assert not p_cfg["fqn_to_config"] and "conv3" in p_cfg["cannot_express"][0] and "along input channels" in p_cfg["cannot_express"][0]
    assert any(line.startswith("fc2: palettize") for line in p_cfg["cannot_express"])

    def top1(m):
        with torch.no_grad():
            return sum(int((m(x).argmax(1) == y).sum()) for (x,), y in zip(samples.batches, samples.labels, strict=True)) / samples.n_samples
    assert top1(q) >= top1(model) - 0.01  # int8/int4 in torchao's own kernels: within a point on the 360 test digits

    gpt = load_model("gpt_mini")
    g_graph = capture(gpt.module, gpt.inputs).graph
    g_resolved = [ResolvedSpec(layer.id, 0, "quantize", {"bits": 4, "granularity": "group", "group_size": 32})
                  for layer in g_graph if layer.op_kind in ("linear", "embedding") and layer.module_path]
    g_cfg = torchao_config(g_resolved, g_graph)
    changed = apply_torchao(gpt.module, g_cfg)
    assert sorted(changed) == sorted(g_cfg["fqn_to_config"]) and any("emb" in c for c in changed)
    assert torch.isfinite(gpt.module(*gpt.inputs)).all()


@pytest.mark.toolchain
def test_nncf_export_runs_in_nncf_on_the_named_layers_only(monkeypatch):
    """The NNCF export is proven by NNCF itself (optional extra): the IgnoredScope names come from NNCF's own graph
    of the model and NNCF validates each one (a name its graph lacks raises), and after the steps exactly the
    plan's weights carry NNCF's weight quantizer or decompressor of the planned kind."""
    pytest.importorskip("nncf")
    import copy
    import sys
    from pathlib import Path

    import nncf

    from layerscope.profiler.capture import capture
    from layerscope.profiler.compression import apply_nncf, build_nncf_ignored_scope, nncf_config, nncf_weight_modes, nncf_weight_nodes
    from layerscope.profiler.compression.plan import ResolvedSpec

    monkeypatch.setenv("NNCF_EXTENSION_LOAD_TIMEOUT", "600")  # NNCF compiles its CPU kernels on first use (slow on 2 cores)
    model = load_model("digits_cnn").module.eval()
    samples = builtin_samples("digits")
    x = samples.batches[0][0][:8]
    graph = capture(model, (x[:1],)).graph
    nodes = nncf_weight_nodes(model, (x,))
    assert nodes["conv1.weight"] == [("conv1/conv2d/0", 1)] and nodes["fc2.weight"] == [("fc2/linear/0", 1)]
    resolved = [ResolvedSpec("conv2", 0, "quantize", {"bits": 8, "activations": True}),
                ResolvedSpec("conv3", 1, "quantize", {"bits": 8, "granularity": "per_tensor"}),
                ResolvedSpec("fc1", 2, "quantize", {"bits": 4, "granularity": "group", "group_size": 16}),
                ResolvedSpec("fc2", 3, "palettize", {"bits": 4})]
    cfg = json.loads(json.dumps(nncf_config(resolved, graph, nodes)))  # exactly what --export-nncf writes
    assert [s["function"] for s in cfg["steps"]] == ["nncf.quantize", "nncf.compress_weights", "nncf.compress_weights"]
    assert cfg["steps"][0]["preset"] == "MIXED" and cfg["steps"][0]["layers"] == ["conv2"]
    assert cfg["steps"][0]["ignored_scope"]["names"] == ["conv1/conv2d/0", "conv3/conv2d/0", "fc1/linear/0", "fc2/linear/0"]
    assert (cfg["steps"][1]["mode"], cfg["steps"][1]["group_size"]) == ("INT4_SYM", 16)
    assert cfg["steps"][2]["mode"] == "INT8_SYM" and any(a.startswith("conv3: per_tensor") for a in cfg["approximations"])
    assert cfg["cannot_express"][0].startswith("fc2: palettize")
    assert isinstance(build_nncf_ignored_scope(cfg["steps"][0]["ignored_scope"]), nncf.IgnoredScope)
    q = apply_nncf(copy.deepcopy(model), cfg, [(x,)])
    assert nncf_weight_modes(q, nodes) == {"conv2.weight": "int8 (quantize)", "fc1.weight": "int4_sym", "conv3.weight": "int8_sym"}
    with torch.no_grad():  # still the same classifier: NNCF's int8/int4 agrees with float on most test digits
        xs = torch.cat([b[0] for b in samples.batches])
        assert (q(xs).argmax(1) == model(xs).argmax(1)).float().mean() >= 0.9

    bad = copy.deepcopy(cfg)  # a name NNCF's graph lacks is refused by NNCF, not ignored: the validation is real
    bad["steps"][0]["ignored_scope"]["names"].append("conv9/conv2d/0")
    with pytest.raises(nncf.errors.ValidationError, match="conv9"):
        apply_nncf(copy.deepcopy(model), bad, [(x,)])

    sys.path.insert(0, str(Path(__file__).parent))
    import patterns

    # Hugging Face layout: blocks that override __call__ (NNCF drops their index from its names) and a tied lm_head.
    # Written without NNCF's names (as when NNCF is not installed where the plan was exported): apply_nncf reads them.
    hf, ids = patterns.checkpointing_blocks()
    hf_graph = capture(hf, ids).graph
    hf_nodes = nncf_weight_nodes(hf, ids)
    assert hf_nodes["h.1.fc.weight"] == [("fc/linear/1", 1)] and hf_nodes["lm_head.weight"] == hf_nodes["wte.weight"]
    hf_cfg = nncf_config([ResolvedSpec("h.1.fc", 0, "quantize", {"bits": 8, "symmetric": False})], hf_graph)
    assert hf_cfg["steps"][0]["ignored_scope"] is None and hf_cfg["steps"][0]["keep_float"] == ["h.0.fc.weight", "lm_head.weight", "wte.weight"]
    hq = apply_nncf(copy.deepcopy(hf), hf_cfg, [ids])
    assert nncf_weight_modes(hq, hf_nodes) == {"h.1.fc.weight": "int8_asym"}
    s_cfg = nncf_config([ResolvedSpec("h.0.fc", 0, "quantize", {"bits": 8, "activations": True})], hf_graph, hf_nodes)
    assert s_cfg["steps"][0]["ignored_scope"]["names"] == ["fc/linear/1", "lm_head/linear/0", "wte/embedding/0"]
    assert nncf_weight_modes(apply_nncf(copy.deepcopy(hf), s_cfg, [ids]), hf_nodes) == {"h.0.fc.weight": "int8 (quantize)"}

    block, inputs = patterns.attention_block()  # GPT-2's Conv1D (addmm in c_fc) and nn.MultiheadAttention's projections
    b_graph = capture(block, inputs).graph
    b_nodes = nncf_weight_nodes(block, inputs)
    b_cfg = nncf_config([ResolvedSpec("c_fc.addmm", 0, "quantize", {"bits": 4, "granularity": "group", "group_size": 16}),
                         ResolvedSpec("attn", 1, "quantize", {"bits": 8})], b_graph, b_nodes)
    assert [(s["mode"], s["layers"]) for s in b_cfg["steps"]] == [("INT4_SYM", ["c_fc.addmm"]), ("INT8_SYM", ["attn"])]
    assert "c_proj/addmm/0" in b_cfg["steps"][0]["ignored_scope"]["names"] and not b_cfg["cannot_express"]
    bq = apply_nncf(block, b_cfg, [inputs])
    assert nncf_weight_modes(bq, b_nodes) == {"c_fc.weight": "int4_sym", "attn.in_proj_weight": "int8_sym", "attn.out_proj.weight": "int8_sym"}
