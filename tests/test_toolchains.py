"""The exports LayerScope writes, run by the consumer libraries themselves (ONNX Runtime, coremltools, torchao, NNCF,
torch.ao), and plans applied with data folders."""

import json

import numpy as np
import pytest
import torch
from helpers import plan_of

from layerscope.profiler import PlanError, drive, load_device_profile, load_model, profile_model
from layerscope.profiler.compression import (
    CompressionPlan,
    LayerSpec,
    apply_plan,
    build_qconfig_mapping,
    compress,
    coreml_configs,
    estimate_plan,
    estimate_static,
    quantize_with_ort,
    resolve_plan,
    torch_ao_mapping,
)
from layerscope.profiler.errors import InputSpecError
from layerscope.profiler.files.data import builtin_samples, load_data_folder, random_samples


# --------------------------------------------------------------------------- real toolchains
@pytest.mark.toolchain
def test_ort_quantizer_accepts_the_adapter_output(tiny, tmp_path):
    import onnx

    loaded, profile, _ = tiny
    resolved, _ = resolve_plan(plan_of(("type:Conv2d", "quantize", {"bits": 8, "activations": True, "act_calibration": "percentile"}),
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
    resolved, _ = resolve_plan(plan_of(("all", "quantize", {"bits": 8})), profile)
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

    hw = load_device_profile("raspberry-pi-5")
    loaded = load_model("digits_cnn")
    profile = drive(profile_model(loaded, hw, runs=2, warmup=1))
    out = drive(compress(loaded, profile, estimate_plan("int8", "digits_cnn"), builtin_samples("digits"), hw, runs=2))
    o = out.output
    assert o.samples == 300 and o.accuracy_reference > 0.95  # the shipped model is really trained
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
    resolved, _ = resolve_plan(plan_of(("all", "palettize", {"bits": 4})), profile)
    cfg = coreml_configs(resolved)
    assert cfg["cannot_express"] == [] and len(cfg["PostTrainingPalettizerConfig"]["module_name_configs"]) == 3
    ao = torch_ao_mapping(resolved, profile.graph)
    assert len(ao["cannot_express"]) == 1 and ao["cannot_express"][0].startswith("3 layers (conv1, conv2, fc): palettize(bits=4)")


def test_static_estimate_matches_the_techniques_storage(tiny_profile):
    """The instant estimate uses the techniques' own accounting: for weight-only techniques it is
    what Apply reports, bit for bit."""
    from layerscope.profiler import load_model
    from layerscope.profiler.compression import CompressionPlan
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
