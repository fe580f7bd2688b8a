import json

import pytest
from helpers import run


def test_profile_factory_file_with_json_and_csv(capsys, factory_py, tmp_path):
    rc, out, _ = run(capsys, "profile", f"{factory_py}:mlp", "--runs", "2", "--hardware", "raspberry-pi-5",
                     "--json", str(tmp_path / "p.json"), "--csv", str(tmp_path / "p.csv"))
    assert rc == 0
    data = json.loads((tmp_path / "p.json").read_text())
    assert "Fidelity" in out
    cells = {}  # layer id -> its table row's cells
    for line in out.splitlines():
        parts = [c.strip() for c in line.split("│")]
        if len(parts) > 3 and parts[2] in data["roofline"]:
            cells[parts[2]] = parts
    assert set(cells) == set(data["roofline"])  # every layer has a row
    for lid, point in data["roofline"].items():  # ... showing the bound the profile found
        assert point["bound"] in cells[lid], (lid, cells[lid])
    counts = {b: sum(p["bound"] == b for p in data["roofline"].values()) for b in ("memory-bound", "compute-bound")}
    assert f"{counts['memory-bound']} memory-bound, {counts['compute-bound']} compute-bound" in out
    assert data["model"]["name"] == "models:mlp" and len(data["graph"]["layers"]) == 3
    assert (tmp_path / "p.csv").read_text().startswith("layer,op_kind")


@pytest.mark.parametrize(("argv", "expected"), [
    (["{dir}/missing.py:f"], "Model file not found"),
    (["{models}:raises"], "raises() raised (at models.py:6): RuntimeError: checkpoint missing"),
    (["{models}:branchy"], "The blocking code is at"),
    (["{models}:mlp", "--input-shape", "2,5"], "failed in layer '0' (Linear)"),
    (["{models}:nan_weights"], "NaN/Inf values in weight"),
    (["resnet51"], "Unknown model 'resnet51'. Did you mean 'resnet50'?"),
    (["{models}:mpl"], "did you mean 'mlp'?"),
    (["tiny_cnn", "--input-shape", "1,3,x"], "not a comma-separated list"),
    (["{dir}/broken.pt2"], "is not a readable torch.export program"),
    (["tiny_cnn", "--hardware", "pi9"], "Unknown device profile 'pi9'"),
])
def test_bad_inputs_give_clear_errors(capsys, factory_py, tmp_path, argv, expected):
    (tmp_path / "broken.pt2").write_text("not a zip")
    argv = [a.format(models=factory_py, dir=tmp_path) for a in argv]
    rc, _, err = run(capsys, "profile", *argv, "--runs", "1")
    assert rc == 2
    assert expected in err
    assert err.startswith("error:")


def test_zoo_and_devices_lists(capsys):
    assert run(capsys, "zoo")[0] == 0
    rc, out, _ = run(capsys, "devices")
    assert rc == 0 and "raspberry-pi-5" in out and "source:" in out


@pytest.mark.toolchain
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
def test_onnx_command_maps_ops_and_writes_json(capsys, tmp_path):
    rc, out, _ = run(capsys, "onnx", "tiny_cnn", "--opt-level", "all", "--runs", "2", "--json", str(tmp_path / "o.json"),
                     "--workdir", str(tmp_path / "w"))
    assert rc == 0
    assert "Coverage: 100.0% of ops and 100.0% of op time mapped to source layers" in " ".join(out.split())
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["opt_level"] == "all" and data["exporter"] == "torch.onnx (dynamo)"
    assert data["report"]["coverage_ops"] == 1.0 and data["report"]["coverage_time"] == 1.0  # the printed coverage line
    assert data["report"]["unmapped_ops"] == [] and data["report"]["fused_ops"] >= 1
    assert any(set(op["layer_ids"]) >= {"conv1", "bn1"} for op in data["ops"])  # a fused op
    rc, out, _ = run(capsys, "onnx", data["onnx_path"], "--runs", "1", "--workdir", str(tmp_path / "w2"))
    assert rc == 0 and "ONNX nodes (no PyTorch source)" in " ".join(out.split())


def test_onnx_command_errors(capsys, tmp_path):
    (tmp_path / "bad.onnx").write_text("garbage")
    rc, _, err = run(capsys, "onnx", str(tmp_path / "bad.onnx"))
    assert rc == 2 and "not a valid ONNX model (corrupt or truncated?)" in err
    rc, _, err = run(capsys, "onnx", "tiny_cnn", "--provider", "NopeExecutionProvider")
    assert rc == 2 and "provider 'NopeExecutionProvider' is not available" in err


@pytest.mark.toolchain
def test_compress_estimate_int8_on_digits_reports_accuracy_and_exports(capsys, tmp_path):
    rep, ort_cfg, ao, tao = tmp_path / "r.json", tmp_path / "ort.json", tmp_path / "ao.json", tmp_path / "torchao.json"
    rc, out, _ = run(capsys, "compress", "digits_cnn", "--estimate", "int8", "--runs", "2", "--json", str(rep),
                     "--export-ort", str(ort_cfg), "--export-torch-ao", str(ao), "--export-torchao", str(tao),
                     "--export-nncf", str(tmp_path / "nncf.json"),
                     "--out", str(tmp_path / "c.pt2"))
    assert rc == 0
    assert "Top-1 accuracy: 99.3% →" in out and "ONNX Runtime int8 (real kernels, quantize_static, 5 node(s)" in out
    assert "fc2: this is the model's output layer" in out  # warn, not forbid (paper 5.6.4)
    data = json.loads(rep.read_text())
    # activation ranges fitted on a seeded sixth of the 360 digits, output and accuracy measured on the other 300
    assert "fitted on 60 samples" in " ".join(out.split()) and data["output"]["samples"] == 300 and data["ort"]["config"]["mode"] == "static"
    summary = data["summary"]  # every summary line printed is in the JSON too
    assert f"({summary['size_ratio']:.3f}×)" in out and f"speed-up {summary['ort_int8_speedup']:.2f}×" in out
    assert f"Top-1 accuracy: {summary['accuracy_before']:.1%}" in out and data["diagnostics"] and data["comparison"]["layers"]
    assert len(json.loads(ort_cfg.read_text())["nodes_to_quantize"]) == 5
    assert set(json.loads(ao.read_text())["module_name"]) == {"conv1", "conv2", "conv3", "fc1", "fc2"}
    # torchao: every layer but conv1 (one input channel, which torchao's intx conv cannot take), the convs by name
    torchao = json.loads(tao.read_text())
    assert set(torchao["fqn_to_config"]) == {"conv2", "conv3", "fc1", "fc2"} and torchao["cannot_express"][0].startswith("conv1")
    nncf_steps = json.loads((tmp_path / "nncf.json").read_text())["steps"]  # int8 with activations: one nncf.quantize, nothing ignored
    assert [(s["function"], s["layers"], s["keep_float"]) for s in nncf_steps] == [
        ("nncf.quantize", ["conv1", "conv2", "conv3", "fc1", "fc2"], [])]
    rc, out, _ = run(capsys, "profile", str(tmp_path / "c.pt2"), "--runs", "1", "--top", "1")
    assert rc == 0  # the compressed model loads again


def test_compress_plan_file_with_data_folder(capsys, tmp_path):
    import numpy as np

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "specs": [
        {"select": "type:Conv2d", "technique": "palettize", "params": {"bits": 4}},
        {"select": "conv2", "technique": "prune_channels", "params": {"amount": 0.25}}]}))
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "b0.npz", x=np.random.rand(4, 3, 32, 32).astype(np.float32), y=np.array([0, 1, 2, 3]))
    rc, out, _ = run(capsys, "compress", "tiny_cnn", "--plan", str(plan), "--data", str(tmp_path / "data"), "--runs", "2")
    assert rc == 0 and "pruned conv2: 32 → 24 channels" in out and "palettize 4-bit per tensor" in out
    assert "Top-1 accuracy" in out and "(simulated" in out


@pytest.mark.parametrize("plan,expected", [
    ('{"version": 1, "specs": [{"select": "nope", "technique": "quantize"}]}', "spec 0 (select 'nope'): matches no layer"),
    ('{"version": 1, "specs": [{"select": "conv1", "technique": "quantize", "params": {"bits": 12}}]}', "it must be an integer from 2 to 8"),
    ('{"version": 1', "is not valid JSON"),
])
def test_compress_bad_plan_exits_2_naming_the_spec(capsys, tmp_path, plan, expected):
    f = tmp_path / "p.json"
    f.write_text(plan)
    rc, _, err = run(capsys, "compress", "tiny_cnn", "--plan", str(f), "--runs", "1")
    assert rc == 2 and expected in err


def test_compress_needs_exactly_one_plan_source(capsys, tmp_path):
    rc, _, err = run(capsys, "compress", "tiny_cnn", "--runs", "1")
    assert rc == 2 and "exactly one of --plan" in err
    rc, _, err = run(capsys, "compress", "tiny_cnn", "--estimate", "fp16", "--data", str(tmp_path))
    assert rc == 2 and "has no .npz or .pt files" in err


def test_compare_float_vs_plan_and_two_plans(capsys, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"version": 1, "specs": [{"select": "all", "technique": "quantize", "params": {"bits": 8}}]}))
    b.write_text(json.dumps({"version": 1, "specs": [{"select": "all", "technique": "quantize", "params": {"bits": 4}}]}))
    rc, out, _ = run(capsys, "compare", "digits_cnn", "--plan", str(a), "--json", str(tmp_path / "c.json"), "--samples", "1")
    assert rc == 0 and "SQNR along depth:" in out and "First layer under 20 dB:" in out
    assert "quantized-output The output layer 'fc2'" in out
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["comparison"]["samples"] == 60 and data["diagnostics"][0]["kind"] == "quantized-output"
    first = data["summary"]["first_layer_under_threshold"]  # the printed "First layer under 20 dB:" line, as data
    assert f"First layer under 20 dB: {first['layer_id'] if first else 'none'}" in " ".join(out.split())
    assert data["summary"]["layers_compared"] == len(data["comparison"]["layers"])
    rc, out, _ = run(capsys, "compare", "digits_cnn", "--plan", str(a), "--plan-b", str(b), "--threshold", "30", "--samples", "1")
    assert rc == 0 and "digits_cnn + a.json vs digits_cnn + b.json" in out


def test_compare_errors(capsys, tmp_path):
    rc, _, err = run(capsys, "compare", "tiny_cnn")
    assert rc == 2 and "Give --plan" in err
    rc, _, err = run(capsys, "compare", "tiny_cnn", "--plan", str(tmp_path / "none.json"))
    assert rc == 2 and "plan file not found" in err  # a bad plan fails before the model loads
    (tmp_path / "empty").mkdir()
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"version": 1, "specs": [{"select": "all", "technique": "quantize", "params": {"bits": 8}}]}))
    rc, _, err = run(capsys, "compare", "tiny_cnn", "--plan", str(plan), "--data", str(tmp_path / "empty"))
    assert rc == 2 and "has no .npz or .pt files" in err


@pytest.mark.slow
def test_compare_two_models_and_an_export_captured_model(capsys, factory_py, tmp_path):
    rc, out, _ = run(capsys, "compare", f"{factory_py}:mlp", "--against", f"{factory_py}:mlp", "--samples", "2")
    assert rc == 0 and "exact everywhere" in out and "No range diagnostics." in out
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"version": 1, "specs": [{"select": "type:Linear", "technique": "quantize", "params": {"bits": 8}}]}))
    rc, out, _ = run(capsys, "compare", "gpt_mini", "--plan", str(plan), "--samples", "1", "--json", str(tmp_path / "g.json"))
    assert rc == 0  # gpt_mini is captured with torch.export: same layer ids, activations still compared
    layers = {lc["layer_id"] for lc in json.loads((tmp_path / "g.json").read_text())["comparison"]["layers"]}
    assert {"blocks.0.attn.proj", "lm_head"} <= layers


def test_compress_and_compare_help_state_their_real_defaults(capsys):
    from layerscope.cli.main import build_parser

    for cmd, runs, warmup in (("compress", 10, 3), ("compare", 3, 1)):
        args = build_parser().parse_args([cmd, "tiny_cnn"])
        assert (args.runs, args.warmup) == (runs, warmup)
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"timed runs per layer (default {runs})" in text and f"untimed warm-up runs (default {warmup})" in text
        assert "--device" not in text  # they measure on the CPU: no flag that would be ignored
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd, "tiny_cnn", "--device", "cuda"])
        assert "unrecognized arguments: --device" in capsys.readouterr().err


def test_compress_warmup_and_capture_reach_the_measurement(capsys, tmp_path):
    rc, out, _ = run(capsys, "compress", "tiny_cnn", "--estimate", "fp16", "--runs", "2", "--warmup", "5",
                     "--capture", "export", "--hardware", "raspberry-pi-5", "--json", str(tmp_path / "r.json"))
    text = " ".join(out.split())
    assert rc == 0 and "median of 2 after 5 warm-up; layers captured with torch.export" in text
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["warmup_runs"] == 5 and rep["capture_method"] == "torch.export"


def test_compare_capture_reaches_both_captures(capsys, tmp_path, monkeypatch):
    import layerscope.profiler.compare.comparison as ranges

    seen = []
    real = ranges.capture

    def spy(model, inputs, method=None):
        seen.append(method)
        return real(model, inputs, method)

    monkeypatch.setattr(ranges, "capture", spy)
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"version": 1, "specs": [{"select": "all", "technique": "quantize", "params": {"bits": 8}}]}))
    rc, _, _ = run(capsys, "compare", "tiny_cnn", "--plan", str(plan), "--capture", "export", "--samples", "1",
                   "--hardware", "raspberry-pi-5")
    assert rc == 0 and [m.value for m in seen] == ["torch.export", "torch.export"]


def test_compress_reports_the_diagnostics_the_app_shows(capsys, tmp_path):
    """CLI and app run one compress job: the CLI's report ends with the same activation comparison
    and diagnostics the app's Activation ranges view lists."""
    from layerscope.profiler import drive
    from layerscope.profiler.compression import CompressionPlan
    from layerscope.profiler.jobs import ModelRequest, compress_job

    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"version": 1, "specs": [{"select": "all", "technique": "quantize", "params": {"bits": 8}}]}))
    rc, out, _ = run(capsys, "compress", "digits_cnn", "--plan", str(plan), "--runs", "1", "--hardware", "raspberry-pi-5", "--samples", "1")
    text = " ".join(out.split())
    result = drive(compress_job(ModelRequest("digits_cnn", runs=1, hardware="raspberry-pi-5"), CompressionPlan.load(plan), samples=1))
    assert rc == 0 and result.diagnostics and "Activations (60 sample(s)): SQNR along depth" in text
    for k, d in enumerate(result.diagnostics, 1):
        assert f"{k}. {d.kind.value} {d.message}" in text


def test_quiet_by_default_verbose_logs_decisions_and_causes(capsys, factory_py):
    from layerscope.profiler import ModelLoadError, load_model

    rc, _, err = run(capsys, "profile", "tiny_cnn", "--runs", "2", "--hardware", "raspberry-pi-5")
    assert rc == 0 and "layerscope." not in err  # a library is quiet unless asked
    rc, _, err = run(capsys, "-v", "profile", "tiny_cnn", "--runs", "2", "--hardware", "raspberry-pi-5")
    assert rc == 0 and "INFO layerscope.profiler.capture.trace: captured TinyCNN with torch.fx" in err
    assert "INFO layerscope.profiler.timing: timed" in err
    # a wrapped library error keeps its cause, and -v names it
    with pytest.raises(ModelLoadError) as e:
        load_model(f"{factory_py}:raises")
    assert isinstance(e.value.__cause__, RuntimeError) and "checkpoint missing" in str(e.value.__cause__)
    rc, _, err = run(capsys, "-v", "profile", f"{factory_py}:raises")
    assert rc == 2 and "caused by RuntimeError: checkpoint missing" in err
    rc, _, err = run(capsys, "profile", "tiny_cnn", "--runs", "2", "--hardware", "raspberry-pi-5")
    assert "layerscope." not in err  # the handler went away with the command


@pytest.mark.slow
def test_a_7b_decoder_on_the_meta_device_profiles_statically_without_allocating(tmp_path):
    """tests/decoder7b.py builds a Llama-2-7B-shaped decoder on the meta device (6.7 B parameters, 25 GiB
    in float32). The static profile must count it exactly while the process stays under 2 GB."""
    import resource
    import subprocess
    import sys
    from pathlib import Path

    factory = Path(__file__).with_name("decoder7b.py")
    out = tmp_path / "d7b.json"
    code = ("import sys, resource; from layerscope.cli.main import main; rc = main(sys.argv[1:]); "
            "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "-q", "profile", f"{factory}:build", "--static", "--device", "meta",
                        "--hardware", "raspberry-pi-5", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MACs 850.00 G" in r.stdout and "Latency: not measured (static profile)" in r.stdout
    maxrss_kb = int(r.stdout.split("maxrss_kb")[1].split()[0])
    assert maxrss_kb < 2 * 2**20, f"{maxrss_kb / 2**20:.2f} GB resident"  # the weights (25 GiB) were never allocated
    data = json.loads(out.read_text())
    per_layer = 4 * 128 * 4096 * 4096 + 3 * 128 * 4096 * 11008 + 32 * 128 * 128 * 128 * 2  # q,k,v,o + gate,up,down + QK^T,PV
    assert per_layer == 26_038_239_232
    assert sum(m["macs"] or 0 for m in data["metrics"].values()) == 32 * per_layer + 128 * 4096 * 32000 == 850_000_871_424
    assert data["model"]["total_params"] == 6_738_415_616 and data["timings"] == {} and data["summary"]["runs"] == 0
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 2 * 2**20


def test_meta_device_without_static_is_refused_clearly(capsys):
    rc, _, err = run(capsys, "profile", "tiny_cnn", "--device", "meta")
    assert rc == 2 and "--static" in err


def test_every_summary_line_of_profile_is_in_its_json(capsys, tmp_path):
    rc, out, _ = run(capsys, "profile", "tiny_cnn", "--runs", "3", "--hardware", "raspberry-pi-5", "--json", str(tmp_path / "p.json"))
    report = json.loads((tmp_path / "p.json").read_text())["report"]
    counts = report["bound_counts"]
    assert f"{counts['memory-bound']} memory-bound, {counts['compute-bound']} compute-bound" in out
    assert f"= {report['fidelity']:.1%} of end-to-end" in out.replace("\n", " ")
    for warning in report["warnings"]:  # the fidelity gap on a model this small, any busy-machine line, roof flags
        assert warning[:60] in " ".join(out.split())
    assert set(report) >= {"total_flops", "total_macs", "unknown_layers", "noisy_layers", "above_roof", "notes"}
