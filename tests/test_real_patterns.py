"""Patterns of real third-party models (tests/patterns.py), through every command: issue 13."""

import json
from pathlib import Path

import pytest
import torch

from layerscope.profiler import drive
from layerscope.profiler.compression import estimate_plan
from layerscope.profiler.jobs import ModelRequest, compare_job, compress_job, onnx_job, profile_job
from layerscope.profiler.resources import untouched

PATTERNS = Path(__file__).parent / "patterns.py"
INPUTS = Path(__file__).parent / "patterns_inputs.py"  # keyword inputs, odd names, empty inputs
FAST = {"runs": 2, "warmup": 1, "hardware": "raspberry-pi-5"}


def _state(model: torch.nn.Module) -> list:
    """What a pass could leave on a model: every module's plain attributes and container entries."""
    out = []
    for name, m in model.named_modules():
        for k, v in vars(m).items():
            if k.startswith("_") and k not in ("_parameters", "_buffers", "_modules"):
                continue
            out.append((name, k, v if not isinstance(v, dict) else dict(v)))
    return out


def _same(a: list, b: list) -> bool:
    def eq(x, y):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            return x is y
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x)
        return x is y or x == y
    return len(a) == len(b) and all(ka == kb and eq(va, vb) for (*ka, va), (*kb, vb) in zip(a, b, strict=True))


@pytest.mark.parametrize("factory", ["anchor_head", "device_bias_cache"])
def test_models_that_cache_state_in_forward_pass_every_command(factory, monkeypatch):
    """ultralytics caches anchors (here, inference tensors after a run under inference_mode) and timm LeViT caches
    a bias per str(device) (an fx Proxy after a trace): each pass must leave the model as it found it, or the next
    one fails (export: "Inference tensors cannot be saved for backward"; the comparison: a node of another graph)."""
    from layerscope.profiler import request

    seen = []
    real_load = request.load_model

    def load(*a, **k):
        loaded = real_load(*a, **k)
        seen.append((loaded.module, _state(loaded.module)))
        return loaded

    monkeypatch.setattr(request, "load_model", load)  # ModelRequest.load: every job loads through it

    req = ModelRequest(f"{PATTERNS}:{factory}", **FAST)
    p = drive(profile_job(req))
    assert len(p.graph) >= 3 and p.timings
    onnx = drive(onnx_job(req))
    assert onnx.coverage_ops == pytest.approx(1.0)
    result = drive(compress_job(req, estimate_plan("int8")))
    assert result.comparison.layers and result.size_ratio < 1
    cmp, _ = drive(compare_job(ModelRequest(f"{PATTERNS}:{factory}", runs=1, warmup=0, hardware="raspberry-pi-5"),
                               estimate_plan("int8")))
    assert cmp.layers
    assert len(seen) == 4 and all(_same(before, _state(m)) for m, before in seen)


def test_untouched_undoes_attributes_container_entries_and_swapped_buffers():
    m = torch.nn.Linear(2, 2)
    m.cache = {"cpu": 1}
    m.register_buffer("b", torch.zeros(1))
    old_b = m.b
    with untouched(m):
        m.cache["Proxy(getattr_1)"] = object()
        m.anchors = torch.ones(3)
        m.b = torch.ones(1)
    assert m.cache == {"cpu": 1} and not hasattr(m, "anchors") and m.b is old_b


def test_a_tied_embedding_is_counted_and_compressed_once():
    """GPT-2's lm_head.weight is wte.weight: before, the shared storage was counted once and subtracted twice
    (GPT-2 printed 55.4 MiB -> -18.1 MiB)."""
    r = drive(compress_job(ModelRequest(f"{PATTERNS}:tied_decoder", **FAST), estimate_plan("int8")))
    res = r
    # float32: wte 512x64 (lm_head is the same storage) 131,072 B + block 64x64 + 64 = 16,640 B
    assert res.size_bytes_before == 512 * 64 * 4 + (64 * 64 + 64) * 4 == 147_712
    # int8 per output channel, symmetric (a float32 scale per row, no zero points): wte 512x64 + 512 scales,
    # block 64x64 + 64 scales, block.bias stays float32
    assert res.size_bytes_after == (512 * 64 + 512 * 4) + (64 * 64 + 64 * 4) + 64 * 4 == 39_424
    tied = {c.layer_id: c.weight for c in res.weights}
    assert tied["lm_head"] is tied["wte"]  # one report: one storage compressed once
    assert any("'lm_head' shares its weight with 'wte' (tied)" in w for w in res.warnings)


def test_compressing_one_side_of_a_tie_says_the_other_changes_too():
    from layerscope.profiler.compression import CompressionPlan, LayerSpec

    plan = CompressionPlan((LayerSpec("lm_head", "palettize", {"bits": 4}),))
    r = drive(compress_job(ModelRequest(f"{PATTERNS}:tied_decoder", **FAST), plan))
    res = r
    assert res.size_bytes_after > 0 and res.size_ratio < 1
    assert any("lm_head.weight is tied to wte.weight (one storage)" in w for w in res.warnings)


def test_the_static_estimate_counts_a_tied_weight_once_and_the_profile_shows_the_tie():
    from layerscope.profiler.compression import estimate_static, resolve_plan

    p = drive(profile_job(ModelRequest(f"{PATTERNS}:tied_decoder", static=True, hardware="raspberry-pi-5")))
    head = next(t for t in p.graph["lm_head"].operands if t.is_weight)
    assert (head.name, head.tied_to) == ("lm_head.weight", "wte.weight")
    assert all(not t.tied_to for t in p.graph["wte"].operands)
    resolved, _ = resolve_plan(estimate_plan("int8"), p)
    e = estimate_static(p, resolved)
    # the same storages as the real compression above: 147,712 B -> 39,424 B
    assert e.model_weight_bytes == 147_712 and e.weight_bytes_saved == 147_712 - 39_424


def test_attention_and_conv1d_weights_are_compressed():
    """torchvision ViT's nn.MultiheadAttention (a third of ViT-B/16) and transformers' Conv1D (GPT-2's c_attn/c_fc/c_proj)
    used to stay float without a word (ViT-B/16 int8 0.498x, GPT-2 0.81x)."""
    r = drive(compress_job(ModelRequest(f"{PATTERNS}:attention_block", **FAST), estimate_plan("int8")))
    res = r
    names = sorted(c.weight.name for c in res.weights)
    assert names == ["attn.in_proj_weight", "attn.out_proj.weight", "c_fc.weight", "c_proj.weight"]
    # float32: ln 2x64, in_proj 192x64 + 192, out_proj 64x64 + 64, c_fc 64x256 + 256, c_proj 256x64 + 64
    assert res.size_bytes_before == 4 * (128 + 192 * 64 + 192 + 64 * 64 + 64 + 64 * 256 + 256 + 256 * 64 + 64) == 199_424
    # int8 per output channel (dim 0) with a float32 scale per row; the 1-D parameters stay float32
    after = (192 * 64 + 192 * 4) + (64 * 64 + 64 * 4) + (64 * 256 + 64 * 4) + (256 * 64 + 256 * 4) + 4 * (128 + 192 + 64 + 256 + 64)
    assert res.size_bytes_after == after == 54_272
    assert res.not_compressed == ()
    assert any("weights only: attn, c_fc.addmm" in w for w in res.warnings)  # int8 activations need a module input
    # module-name configs (coremltools, torchao, torch.ao) cannot reach them: each says so instead of naming a module that is not one
    from layerscope.profiler.compression import coreml_configs, torch_ao_mapping, torchao_config

    graph = r.reference.graph
    resolved = r.resolved
    for cfg in (coreml_configs(resolved, graph), torchao_config(resolved, graph), torch_ao_mapping(resolved, graph)):
        assert "c_fc.addmm" not in json.dumps({k: v for k, v in cfg.items() if k != "cannot_express"})
        assert any(line.startswith("c_fc.addmm (addmm, c_fc.weight)") for line in cfg["cannot_express"])


def test_weights_no_technique_reaches_are_listed_by_name_and_size():
    r = drive(compress_job(ModelRequest(f"{PATTERNS}:device_bias_cache", **FAST), estimate_plan("int8")))
    res = r
    # each block's 4x16 float32 bias table is read by indexing, which no technique compresses
    assert [(w.name, w.bytes, w.selectable) for w in res.not_compressed] == [("0.table", 256, False), ("2.table", 256, False)]
    assert res.not_compressed[0].reason.startswith("read by 0.getitem")
    text = res.not_compressed_text()
    assert text.startswith("2 weight matrices, 512 B") and "2 no technique reaches: 0.table 256 B" in text
    assert json_summary(r)["not_compressed_bytes"] == 512


def test_a_partial_plan_counts_what_it_left_out():
    from layerscope.profiler.compression import CompressionPlan, LayerSpec

    plan = CompressionPlan((LayerSpec("c_fc.addmm", "quantize", {"bits": 8}),))
    res = drive(compress_job(ModelRequest(f"{PATTERNS}:attention_block", **FAST), plan))
    assert [w.name for w in res.not_compressed] == ["c_proj.weight", "attn.in_proj_weight", "attn.out_proj.weight"]
    assert all(w.selectable and w.reason == "not selected" for w in res.not_compressed)
    assert res.not_compressed_text().endswith("3 not selected by the plan")


def json_summary(result):
    return json.loads(result.to_json())["summary"]


def test_ranges_are_read_before_an_in_place_op_overwrites_them():
    """In compare on torchvision ResNet-50, bn1 showed min 0 and 50 % zeros, the ReLU(inplace=True) after it."""
    import sys

    from layerscope.profiler.compare import compare_models
    from layerscope.profiler.compression import apply_plan, resolve_plan
    from layerscope.profiler.files.data import samples_for
    from layerscope.profiler.files.source import LoadedModel

    sys.path.insert(0, str(PATTERNS.parent))
    from patterns import in_place_residual

    stats = {}
    for inplace in (True, False):
        m, x = in_place_residual(inplace)
        loaded = LoadedModel("twin", "twin", "factory", m, x)
        batches = samples_for(loaded, None, 4)
        p = drive(profile_job(ModelRequest(f"{PATTERNS}:in_place_residual", static=True, hardware="raspberry-pi-5")))
        resolved, warns = resolve_plan(estimate_plan("int8-weights"), p)
        cand, _ = drive(apply_plan(m, p.graph, resolved, batches, warns))
        cmp = drive(compare_models(m, cand, batches))
        stats[inplace] = {lay.layer_id: (lay.reference.min, lay.reference.max, lay.candidate.min) for lay in cmp.layers}
        # percentiles come from a histogram, interpolated within a bin: never outside the exact extremes
        assert all(s.min <= v <= s.max for lay in cmp.layers for s in (lay.reference, lay.candidate) for v in s.percentiles.values())
    assert stats[True]["bn"] == stats[False]["bn"]
    assert stats[True]["bn"][0] < 0  # a BatchNorm output has negatives; only the ReLU after it is >= 0
    assert stats[True]["relu"][0] == 0 and stats[True]["conv2"] == stats[False]["conv2"]


def test_a_discarded_log_of_zero_is_a_note_and_non_finite_outputs_still_stop():
    """T5's bucketing takes log(0) = -inf and drops it with torch.where: compare used to abort on it."""
    from layerscope.profiler.compression import CompressionPlan, LayerSpec
    from layerscope.profiler.errors import ComparisonError

    plan = CompressionPlan((LayerSpec("all", "quantize", {"bits": 8}),))
    cmp, _ = drive(compare_job(ModelRequest(f"{PATTERNS}:relative_buckets", runs=1, warmup=0, hardware="raspberry-pi-5"), plan))
    # 16 positions: the diagonal of |i - j| is 0, so 16 of the 16 x 16 logs are -inf
    assert any(n.startswith("NaN/Inf at layer 'log' (log)") and "16 of 256 values" in n for n in cmp.notes)
    log = next(lay for lay in cmp.layers if lay.layer_id == "log")
    assert log.reference.nonfinite > 0 and all(v == v for v in log.reference.percentiles.values())  # numbers, not NaN
    assert cmp.layers[-1].sqnr_db is not None and cmp.layers[-1].sqnr_db > 20

    import copy
    import sys

    from layerscope.profiler.compare import compare_models
    from layerscope.profiler.files.data import SampleSet

    sys.path.insert(0, str(PATTERNS.parent))
    from patterns import nan_output

    m, x = nan_output()
    with pytest.raises(ComparisonError, match=r"NaN/Inf reach the reference model's output at layer '2\.log' \(log\)"):
        drive(compare_models(m, copy.deepcopy(m), SampleSet((x,), None, "test")))


def test_a_keyword_input_model_runs_every_command_with_its_own_layer_ids():
    """Raw Hugging Face models take keyword inputs (attention_mask=..., decoder_input_ids=...): a factory may
    return (module, args, kwargs); tensors become inputs, the rest stays fixed."""
    req = ModelRequest(f"{INPUTS}:keyword_inputs", **FAST)
    loaded = req.load()
    assert [tuple(t.shape) for t in loaded.inputs] == [(2, 8), (2, 8)]  # input_ids, attention_mask
    p = drive(profile_job(req))
    assert [lay.id for lay in p.graph][:2] == ["emb", "proj"] and p.graph.layers[-1].id == "mul"  # the model's ids, no wrapper prefix
    assert p.model.total_params == 100 * 16 + 16 * 16 + 16
    assert drive(profile_job(ModelRequest(f"{INPUTS}:keyword_inputs", static=True, hardware="raspberry-pi-5"))).total_macs == p.total_macs
    assert drive(onnx_job(req)).coverage_ops == pytest.approx(1.0)
    r = drive(compress_job(req, estimate_plan("int8-weights")))
    assert r.output.sqnr_db > 20 and {c.layer_id for c in r.weights} == {"emb", "proj"}
    with pytest.raises(Exception, match="positional example inputs that are not all tensors"):
        ModelRequest(f"{INPUTS}:keyword_inputs_positional_none").load()


def test_state_dict_and_copies_of_a_keyword_input_model_are_the_models():
    import copy

    from layerscope.profiler.files.source import CallWith

    loaded = ModelRequest(f"{INPUTS}:keyword_inputs").load()
    wrapper = loaded.module
    assert isinstance(wrapper, CallWith)
    assert list(wrapper.state_dict()) == list(wrapper.wrapped.state_dict()) == ["emb.weight", "proj.weight", "proj.bias"]
    twin = copy.deepcopy(wrapper)
    assert twin.proj is not wrapper.proj and twin.wrapped.proj is twin.proj  # a copy shares its own children
    with torch.no_grad():
        twin.proj.weight.zero_()
    assert torch.equal(twin(*loaded.inputs)["last_hidden_state"], twin.proj.bias.expand(2, 8, 16) * loaded.inputs[1][..., None])


def test_a_dropped_ort_measurement_says_why():
    """T5 once printed `ort: null` without a word when the ORT int8 check had nothing to take."""
    from layerscope.profiler.compression import CompressionPlan, LayerSpec

    plan = CompressionPlan((LayerSpec("all", "palettize", {"bits": 4}),))
    r = drive(compress_job(ModelRequest(f"{PATTERNS}:attention_block", **FAST), plan, ort_int8=True))
    assert r.ort is None
    said = [w for w in r.warnings if w.startswith("ONNX Runtime int8 was not measured")]
    assert said and "palettize" in said[0]
    assert said[0] in json_summary(r)["warnings"]


def test_a_detection_model_is_profiled_by_submodule_with_recorded_inputs(capsys):
    """torchvision SSDlite failed capture with 4,321 characters of symbolic shapes; now the error names the
    blocking line and the ways out (--static, --submodule), and --submodule works on a head fed a list of maps."""
    from helpers import run

    rc, out, err = run(capsys, "profile", f"{PATTERNS}:tiny_detector", "--runs", "2", "--warmup", "1", "--hardware", "raspberry-pi-5")
    assert rc != 0 and "keep.append(int(order[0]))" in err and "--submodule backbone (largest parts: backbone, head)" in err
    assert len(err) < 1200
    req = ModelRequest(f"{PATTERNS}:tiny_detector", submodule="head", **FAST)
    loaded = req.load()
    # backbone: 32x32 -> stride 2 -> 8x16x16 -> stride 2 -> 16x8x8, recorded from one forward of the whole model
    assert [tuple(t.shape) for t in loaded.inputs] == [(1, 8, 16, 16), (1, 16, 8, 8)]
    p = drive(profile_job(req))
    # cls convs 8->3 on 16x16 and 16->3 on 8x8, box convs 8->4 and 16->4: MACs = (3+4) x (8x256 + 16x64)
    assert p.total_macs == 7 * (8 * 256 + 16 * 64) == 21_504
    assert {lay.id for lay in p.graph if lay.module_path} == {"cls.0", "cls.1", "box.0", "box.1"}  # ids relative to head
    assert any("submodule 'head'" in n for n in p.model.capture_notes)
    r = drive(compress_job(req, estimate_plan("int8-weights")))
    out = r.output
    assert out.sqnr_db > 20 and [name for name, _ in out.leaves] == ["0", "1"]  # (cls, box): compared leaf by leaf
    assert all(db > 20 for _, db in out.leaves) and json_summary(r)["outputs_sqnr_db"] == dict(out.leaves)
    cmp, _ = drive(compare_job(ModelRequest(f"{PATTERNS}:tiny_detector", submodule="backbone", runs=1, warmup=0,
                                            hardware="raspberry-pi-5"), estimate_plan("int8-weights")))
    assert [lay.layer_id for lay in cmp.layers][:2] == ["stem.0", "stem.1"]
    with pytest.raises(Exception, match=r"no submodule 'heads'; did you mean 'head'"):
        ModelRequest(f"{PATTERNS}:tiny_detector", submodule="heads").load()
    static = drive(profile_job(ModelRequest(f"{PATTERNS}:tiny_detector", static=True, hardware="raspberry-pi-5")))
    assert static.total_macs == 21_504 + 8 * 27 * 256 + 16 * 72 * 64  # the whole network, NMS loop included, recorded eagerly


def test_a_constant_output_is_called_out_and_numerically_zero_ranges_are_not_diagnosed():
    r = drive(compress_job(ModelRequest(f"{PATTERNS}:constant_output", **FAST), estimate_plan("int8-weights")))
    out = r.output
    assert out.variation is not None and out.variation < 1e-6 and out.constant
    assert any("output barely changes across the 8 samples" in w for w in r.warnings)
    normal = drive(compress_job(ModelRequest(f"{PATTERNS}:attention_block", **FAST), estimate_plan("int8-weights")))
    assert not normal.output.constant and normal.output.variation > 0.1

    cmp, diags = drive(compare_job(ModelRequest(f"{PATTERNS}:tiny_branches", runs=1, warmup=0, hardware="raspberry-pi-5"),
                                   estimate_plan("int8-weights")))
    add = next(lay for lay in cmp.layers if lay.op_kind == "add")
    big, small = sorted(o.absmax for o in add.operands)[::-1]
    assert big < 1e-6 and big / small > 10  # a 100x "mismatch" of numbers that are zero for any purpose
    assert not [d for d in diags if d.kind.value == "range-mismatch"]


def test_recurrent_weights_are_counted_and_compressed():
    p = drive(profile_job(ModelRequest(f"{PATTERNS}:lstm_tagger", static=True, hardware="raspberry-pi-5")))
    # LSTM per step and direction: layer 0 4x32x(16+32) = 6,144, layer 1 4x32x(64+32) = 12,288; x T=12 x 2 directions;
    # the head 12 x 64 x 5 (the tagger counted 1,280 MACs, its head alone)
    assert p.total_macs == (6144 + 12288) * 12 * 2 + 12 * 64 * 5 == 446_208
    r = drive(compress_job(ModelRequest(f"{PATTERNS}:lstm_tagger", **FAST), estimate_plan("int8-weights")))
    names = {c.weight.name for c in r.weights}
    assert {f"lstm.weight_{m}_l{k}{d}" for m in ("ih", "hh") for k in (0, 1) for d in ("", "_reverse")} <= names
    assert r.not_compressed == () and r.size_ratio < 0.3


def test_every_command_takes_submodule(capsys, tmp_path):
    from helpers import run

    spec = f"{PATTERNS}:tiny_detector"
    for argv in (["profile", spec, "--runs", "2", "--warmup", "1"], ["onnx", spec, "--runs", "2", "--warmup", "1"],
                 ["compress", spec, "--estimate", "int8-weights", "--runs", "2", "--warmup", "1", "--samples", "2"]):
        extra = [] if argv[0] == "onnx" else ["--hardware", "raspberry-pi-5"]  # onnx measures in ORT, no roofline
        rc, out, err = run(capsys, *argv, "--submodule", "head", *extra)
        assert rc == 0, (argv[0], err)
        assert "tiny_detector.head" in out, argv[0]


def test_data_files_may_name_the_inputs_of_a_keyword_model(tmp_path):
    import numpy as np

    loaded = ModelRequest(f"{INPUTS}:keyword_inputs").load()
    assert loaded.input_names == ("input_ids", "attention_mask")
    g = np.random.default_rng(0)
    for k in range(2):  # one batch per file, arrays named like the forward's parameters
        np.savez(tmp_path / f"b{k}.npz", input_ids=g.integers(0, 100, (3, 8)), attention_mask=np.ones((3, 8), np.float32))
    torch.save({"attention_mask": torch.ones(3, 8), "input_ids": torch.randint(0, 100, (3, 8))}, tmp_path / "b2.pt")
    r = drive(compress_job(ModelRequest(f"{INPUTS}:keyword_inputs", **FAST), estimate_plan("int8-weights"), data=tmp_path))
    assert r.output.samples == 9
    np.savez(tmp_path / "b3.npz", ids=np.zeros((3, 8), np.int64))
    with pytest.raises(Exception, match=r"by the model's input names \(input_ids, attention_mask\)"):
        drive(compress_job(ModelRequest(f"{INPUTS}:keyword_inputs", **FAST), estimate_plan("int8-weights"), data=tmp_path))


@pytest.mark.parametrize("spec, sub", [(f"{PATTERNS}:tiny_detector", "head"), (f"{INPUTS}:keyword_inputs", None)])
def test_a_profile_reloads_its_model_as_the_app_does_for_apply(spec, sub):
    """The app's Apply loads the profiled model again from the profile (ModelRequest.for_profile): a submodule is
    found again in the whole model on the whole model's inputs, a keyword model gets its named inputs back."""
    p = drive(profile_job(ModelRequest(spec, submodule=sub, static=True, hardware="raspberry-pi-5")))
    again = ModelRequest.for_profile(p)
    assert (again.model, again.submodule) == (spec, sub)
    loaded = again.load()
    assert [tuple(t.shape) for t in loaded.inputs] == [tuple(s) for s in p.model.input_shapes]
    assert [str(t.dtype).removeprefix("torch.") for t in loaded.inputs] == list(p.model.input_dtypes)
    r = drive(compress_job(again, estimate_plan("int8-weights"), profile=p))
    assert r.size_ratio < 1


def test_an_empty_integer_input_is_profiled_and_compressed_with_random_inputs_like_it():
    """Random inputs come from one function (files.data.random_like): it once had two copies, and the
    compress copy read the largest value of an integer input with no elements (a raw RuntimeError)."""
    import torch

    from layerscope.profiler.files.data import random_like, random_samples

    ids = torch.zeros(2, 0, dtype=torch.long)
    x, got = random_like((torch.randn(2, 16), ids))
    assert got.shape == (2, 0) and got.dtype == torch.long and x.dtype == torch.float32
    mask, tokens = random_like((torch.ones(1, 4, dtype=torch.bool), torch.tensor([[7]])), [(1, 4), (1, 9)], seed=3)
    assert mask.all() and tokens.shape == (1, 9) and int(tokens.max()) < 8
    assert len(random_samples((torch.randn(2, 16), ids), 3).batches) == 3
    r = drive(compress_job(ModelRequest(f"{INPUTS}:empty_int_input", **FAST), estimate_plan("int8"), ort_int8=False))
    assert r.size_ratio < 0.5
