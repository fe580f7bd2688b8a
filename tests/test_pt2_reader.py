"""The .pt2 reader is an allowlist: every crafted file is refused on every loading path with its
payload never run, bombs are refused within bounds, a fuzzer finds no way through, and every
program torch 2.4–2.14 writes (and every zoo model and real-model pattern) still opens without
--trust-file, equal to what torch.export.load gives."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import crafted
import patterns
import pytest
import torch
from helpers import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from layerscope.profiler import drive, load_model
from layerscope.profiler.errors import LayerScopeError, UnsafeFileError
from layerscope.profiler.files.safeload import exprs, load_exported_program, read_pt2
from layerscope.profiler.files.safeload.tensors import read_torch_save

FIXTURES = Path(__file__).parent / "data" / "pt2"
PLANTED = "layerscope_planted"


@pytest.fixture(scope="module")
def base_pt2(tmp_path_factory):
    return crafted.base_program(tmp_path_factory.mktemp("pt2") / "base.pt2")


def _evil(variant: str, base: Path, folder: Path) -> tuple[Path, Path]:
    marker = folder / f"{variant}.marker"
    if variant in ("enum_escape", "planted_class"):
        crafted.plant_module(folder, marker, PLANTED)  # a colleague's folder with a .py beside the model
    return crafted.VARIANTS[variant](base, folder / f"{variant}.pt2", marker), marker


LOADS = ("guard_code", "planted_class")  # well-formed files whose payload is a part LayerScope must simply never run
REFUSED = sorted(set(crafted.VARIANTS) - set(LOADS))


# --------------------------------------------------------------------------- crafted files
@pytest.mark.parametrize("variant", REFUSED)
def test_a_crafted_pt2_is_refused_on_every_path_and_never_runs(capsys, qtbot, tmp_path, base_pt2, factory_py, variant,
                                                               monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m layerscope` run in that folder would have it
    evil, marker = _evil(variant, base_pt2, tmp_path)
    with pytest.raises(UnsafeFileError) as e:
        load_model(str(evil))
    msg = str(e.value)
    assert str(evil) in msg and "--trust-file" in msg and "\n" not in msg
    with pytest.raises(UnsafeFileError):  # the reader itself, as Model Explorer's export and the app use it
        load_exported_program(evil)
    for argv in (["profile", str(evil), "--runs", "1", "--hardware", "raspberry-pi-5"],
                 ["profile", str(evil), "--static", "--hardware", "raspberry-pi-5"],
                 ["onnx", str(evil), "--runs", "1"],
                 ["compress", str(evil), "--estimate", "fp16", "--samples", "1", "--hardware", "raspberry-pi-5"],
                 ["compare", f"{factory_py}:mlp", "--against", str(evil), "--samples", "1", "--runs", "1",
                  "--hardware", "raspberry-pi-5"]):
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and "refused to load" in err and "--trust-file" in err, (argv, err)
    from layerscope.app.controller import ProfileController
    from layerscope.app.state import AppState
    from layerscope.profiler.jobs import ModelRequest

    ctl = ProfileController(AppState(), show_dialogs=False)  # the app's File → Open model
    with qtbot.waitSignal(ctl.failed, timeout=60_000) as blocker:
        ctl.start(ModelRequest(model=str(evil), hardware="raspberry-pi-5", runs=1, warmup=0))
    qtbot.waitUntil(lambda: ctl.worker is None)
    assert "Trust this file" in blocker.args[0]
    assert not marker.exists() and PLANTED not in sys.modules


@pytest.mark.slow
def test_python_m_layerscope_in_the_folder_of_a_planted_module_refuses(tmp_path, base_pt2):
    """`python -m layerscope` puts the working folder on sys.path: a .py planted beside the model is
    importable, and a spec naming it must still never import it."""
    for variant in ("enum_escape", "legacy_sympy", "codegen_name"):
        evil, marker = _evil(variant, base_pt2, tmp_path)
        proc = subprocess.run([sys.executable, "-m", "layerscope", "profile", evil.name, "--static", "--hardware",
                               "raspberry-pi-5"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": ""})
        assert proc.returncode == 2 and "refused to load" in proc.stderr, (variant, proc.stderr[-800:])
        assert "Traceback" not in proc.stderr and not marker.exists(), variant


@pytest.mark.parametrize("variant", LOADS)
def test_guards_and_class_names_from_the_file_are_never_run(capsys, tmp_path, base_pt2, variant, monkeypatch):
    """The input guards are dropped; a class named in the module stack is never imported to learn its kind
    (the planted module beside the file stays unimported), on every path, `python -m layerscope` included."""
    monkeypatch.syspath_prepend(str(tmp_path))
    evil, marker = _evil(variant, base_pt2, tmp_path)
    loaded = load_model(str(evil))
    loaded.module(*loaded.inputs)
    for argv in (["profile", str(evil), "--runs", "1", "--hardware", "raspberry-pi-5", "--no-history"],
                 ["profile", str(evil), "--static", "--hardware", "raspberry-pi-5", "--no-history"],
                 ["compress", str(evil), "--estimate", "fp16", "--samples", "1", "--runs", "1", "--hardware", "raspberry-pi-5",
                  "--no-history"]):
        rc, _, err = run(capsys, *argv)
        assert rc == 0, err
    proc = subprocess.run([sys.executable, "-m", "layerscope", "profile", evil.name, "--static", "--hardware",
                           "raspberry-pi-5", "--no-history"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-800:]
    assert not marker.exists() and PLANTED not in sys.modules
    if variant == "guard_code":
        assert any("input guard(s) are code and were not run" in n for n in load_exported_program(evil)[2])


@pytest.mark.parametrize("variant", crafted.RUNS_PAYLOAD)
def test_the_crafted_files_are_real_exploits(tmp_path, base_pt2, variant, monkeypatch):
    """Plain torch.export.load (then .module() and a call) runs each payload: the refusals above are
    not about harmless files."""
    monkeypatch.syspath_prepend(str(tmp_path))
    evil, marker = _evil(variant, base_pt2, tmp_path)
    try:
        torch.export.load(str(evil)).module()(torch.randn(2, 4))
    except Exception:  # noqa: BLE001 - most payloads break the program after running
        pass
    finally:
        sys.modules.pop(PLANTED, None)
    assert marker.read_text() == "pwned"


def _zip_bomb(src: Path, dst: Path) -> Path:
    root, files = crafted._files(src)
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data + (b" " * (300 << 20) if name.endswith("models/model.json") else b""))
    return dst


def _deep_json(src: Path, dst: Path) -> Path:
    root, files = crafted._files(src)
    name = f"{root}/models/model.json"
    files[name] = files[name].replace(b'"nodes": [', b'"nodes": [' + b"[" * 100_000 + b"]" * 100_000 + b", ", 1)
    return crafted._write(dst, files)


@pytest.mark.parametrize("bomb", ["pow_bomb", "pow_call_bomb", "zip_bomb", "deep_json"])
def test_a_pathological_file_is_refused_fast_and_small(tmp_path, base_pt2, bomb):
    """Refused in under 2 s and 200 MB (what sympy, json or zlib would spend is never spent)."""
    make = {"zip_bomb": lambda s, d, m: _zip_bomb(s, d), "deep_json": lambda s, d, m: _deep_json(s, d)}.get(bomb) \
        or crafted.VARIANTS[bomb]
    evil = make(base_pt2, tmp_path / f"{bomb}.pt2", tmp_path / "marker")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(LayerScopeError) as e:
            load_exported_program(evil)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 2 and peak < 200 << 20, (seconds, peak)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- the fuzzer
_HOSTILE = ["__import__('os').system('x')", 'a"); import os #', "0.w\") if exec('1') else (0, \"", "\r", "\u2028",
            "torch.os.system", "Pow(2, 10**29)", "((2**64)**64)**64", "Symbol('x; 1')", "[/]", "__class__",
            "torch.ops.evil.run.default", "s0**99", "L['x'].__class__", "\\u005f\\u005fenum\\u005f\\u005f", "", "x" * 5000]


def _paths(data, prefix=()):
    """Every (path, value) of the JSON tree, strings and numbers included."""
    out = [(prefix, data)]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


def _replace(data, path, value):
    if not path:
        return value
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        node.pop(path[-1])
    elif isinstance(value, tuple) and value[0] is _RENAME:
        if isinstance(node, dict):
            node[value[1]] = node.pop(path[-1])
    else:
        node[path[-1]] = value
    return data


_DELETE = object()
_RENAME = object()


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")

    class Dyn(nn.Module):  # dynamic shapes put expressions, ranges and sym nodes in the program
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)
            self.register_buffer("scale", torch.ones(4))

        def forward(self, x):
            return self.fc(x)[: x.shape[0] // 2] * self.scale

    half = torch.export.Dim("half", min=2, max=32)
    ep = torch.export.export(Dyn(), (torch.randn(6, 8),), dynamic_shapes=({0: 2 * half},))
    torch.export.save(ep, str(folder / "base.pt2"))
    root, files = crafted._files(folder / "base.pt2")
    return folder, root, files, json.loads(files[f"{root}/models/model.json"])


@settings(max_examples=int(os.environ.get("LAYERSCOPE_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_program_json_never_runs_or_hangs(fuzz_base, data):
    folder, root, files, program = fuzz_base
    program = json.loads(json.dumps(program))
    marker = folder / "marker"
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(program)[1:]  # never the root itself
        path, old = paths[data.draw(st.integers(0, len(paths) - 1))]
        choices = [st.sampled_from(_HOSTILE).map(lambda s: s.replace("'x'", repr(str(marker)))),
                   st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=True), st.booleans(), st.none(),
                   st.just([]), st.just({}), st.just({"as_expr": {"expr_str": "s0*2", "hint": None}}),
                   st.text(max_size=30), st.just(_DELETE), st.sampled_from(_HOSTILE).map(lambda s: (_RENAME, s))]
        if isinstance(old, str):
            choices.append(st.just(old + data.draw(st.sampled_from(["'", '"', ")", ".__class__", ";", "\x00", "@1"]))))
        program = _replace(program, path, data.draw(st.one_of(choices)))
    target = folder / "fuzzed.pt2"
    crafted._write(target, {**files, f"{root}/models/model.json": json.dumps(program).encode()})
    start = time.perf_counter()
    try:
        _, module, _ = load_exported_program(target)  # loads, or one clean LayerScope error: nothing else
    except LayerScopeError as exc:
        assert "\n" not in str(exc) and str(target) in str(exc)
    else:
        try:
            module(torch.randn(6, 8))
        except Exception:  # noqa: BLE001 - a mutated program may not run on these inputs: its own error, at call time
            pass
    assert time.perf_counter() - start < 10
    assert not marker.exists()



# --------------------------------------------------------------------------- what must still open
@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("torch-*.pt2")), ids=lambda p: p.stem)
def test_every_torch_releases_archive_opens_and_computes_what_its_writer_computed(fixture):
    record = json.loads(fixture.with_suffix(".json").read_text())
    ep, module, notes = load_exported_program(fixture)
    with torch.no_grad():
        outputs = module(torch.tensor(record["input"]))
    for got, want in zip(outputs, record["outputs"], strict=True):
        torch.testing.assert_close(got, torch.tensor(want), rtol=1e-5, atol=1e-5)
    args, kwargs = ep.example_inputs
    assert args[0].shape == (3, 3, 5, 5) and not kwargs
    assert {"conv.weight", "bn.running_var", "scale"} <= set(ep.state_dict) and "table" in ep.constants


def test_the_fixtures_cover_every_layout_torch_writes():
    layouts = {}
    for fixture in sorted(FIXTURES.glob("torch-*.pt2")):
        contents = read_pt2(fixture)
        layouts.setdefault(contents.layout, []).append(fixture.stem)
        with zipfile.ZipFile(fixture) as z:
            if any(n.endswith("data/weights/model.pt") for n in z.namelist()):
                layouts.setdefault("pt2 with torch.save weights", []).append(fixture.stem)
    assert {"legacy", "pt2", "pt2 with torch.save weights"} <= set(layouts), layouts
    versions = {tuple(map(int, p.stem.split("-")[1].split("."))) for p in FIXTURES.glob("torch-*.pt2")}
    assert {(2, 4), (2, 7), (2, 8), (2, 13), (2, 14)} <= versions


def _static(spec: str, trust: bool):
    from layerscope.profiler.jobs import ModelRequest, profile_job

    return drive(profile_job(ModelRequest(model=spec, static=True, hardware="raspberry-pi-5", trust_file=trust)))


_PATTERNS = ["anchor_head", "tied_decoder", "attention_block", "in_place_residual", "relative_buckets", "lstm_tagger",
             "output_model", "checkpointing_blocks"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny_cnn", "gpt_mini", "vit_small", "mobilenet_v2", *_PATTERNS])
def test_real_programs_open_without_trust_and_profile_as_torch_export_load_does(tmp_path, name):
    if name in _PATTERNS:
        module, inputs = getattr(patterns, name)()[:2]
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        ep = torch.export.export(module.eval(), inputs, strict=False)
    else:
        m = load_model(name)
        ep = torch.export.export(m.module, m.inputs, strict=False)
    path = tmp_path / f"{name}.pt2"
    torch.export.save(ep, str(path))
    ours, theirs = _static(str(path), trust=False), _static(str(path), trust=True)
    assert ours.records() == theirs.records()
    loaded = load_model(str(path))
    got, want = loaded.module(*loaded.inputs), torch.export.load(str(path)).module()(*loaded.inputs)
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want), strict=True):
        assert torch.equal(a, b)


def test_dynamic_shapes_open_and_run_at_other_sizes(tmp_path):
    class Two(nn.Module):
        def forward(self, x, y):
            z = torch.cat([x, y], 0)
            keep = (z > -1) & (z < 1)  # aten.__and__.Tensor: a registered operator with a dunder name (GPT-2 has it)
            return (z * keep).reshape(-1, 4)[: x.shape[0] // 2 + 1]

    b = torch.export.Dim("b", min=2, max=32)
    ep = torch.export.export(Two(), (torch.randn(4, 8), torch.randn(6, 8)), dynamic_shapes=({0: 2 * b}, {0: 2 * b + 2}))
    torch.export.save(ep, str(tmp_path / "dyn.pt2"))
    loaded = load_model(str(tmp_path / "dyn.pt2"), input_shapes=[(8, 8), (10, 8)])
    assert loaded.module(*loaded.inputs).shape == (5, 4)


def test_compress_out_round_trips_through_the_reader(capsys, tmp_path):
    out = tmp_path / "small.pt2"
    rc, _, err = run(capsys, "compress", "tiny_cnn", "--estimate", "int8", "--runs", "1", "--samples", "2",
                     "--hardware", "raspberry-pi-5", "--out", str(out))
    assert rc == 0, err
    rc, stdout, err = run(capsys, "profile", str(out), "--static", "--hardware", "raspberry-pi-5")
    assert rc == 0 and "refused" not in err, err


def test_trust_file_opts_in_and_says_so(capsys, tmp_path, base_pt2):
    evil, marker = _evil("pickled_inputs", base_pt2, tmp_path)
    from layerscope.cli.main import main

    rc = main(["-q", "profile", str(evil), "--trust-file", "--runs", "1", "--hardware", "raspberry-pi-5"])
    out, err = capsys.readouterr()
    out = " ".join(out.split())
    assert rc == 0 and marker.exists(), err  # the user asked for it
    assert "--trust-file" in out  # the profile says the checks were skipped
    assert "torch warned while loading: Fallback to weights_only=False" in out  # torch's own warning is not hidden


# --------------------------------------------------------------------------- the parts
def test_expression_grammar():
    for ok in ("s0", "2*s0 + 1", "Max(1, s0)", "FloorDiv(s0, 2)", "(s0 - 1)//2 + 1", "s0**2", "Eq(s0, 4) & (s1 <= 8)",
               "Add(Mul(Integer(8), Symbol('s65', positive=True, integer=True)), Integer(4))", "-s0/2 + 1.5", "oo",
               "PythonMod(s0, 7)", "Pow(s0, -1)", "ToFloat(s0)"):
        exprs.canonical(ok)
    for bad in ("__import__('os')", "exec(chr(49))", "s0.__class__", "open('x')", "9**9**9", "lambda: 1", "[s0]",
                "L['x']", "'a' + 'b'", "Symbol('x; import os')", "Max(s0, key=print)", "Integer(s0)", "Pow(2, 10**29)",
                "((2**64)**64)**64", "2**65", "LShift(1, 100000)", "1" * 30, "(" * 40 + "s0" + ")" * 40,
                "Max(" + ", ".join(["s0"] * 20) + ")", "s0 < s1 < s2", "Symbol('s0', evil=True)"):
        with pytest.raises(exprs.ExprError):
            exprs.canonical(bad)


def test_the_printed_expression_means_what_the_file_said():
    import sympy
    from torch.utils._sympy.functions import FloorDiv

    s0 = sympy.Symbol("s0", positive=True, integer=True)
    names = {"FloorDiv": FloorDiv, "s0": s0}
    for text in ("2*s0 + 1", "FloorDiv(s0 - 1, 2) + 1", "Max(1, s0)*(s0 + 3)", "-s0 + 8", "s0**2 % 7"):
        assert sympy.sympify(exprs.canonical(text), locals=names) == sympy.sympify(text, locals=names), text


def test_tensors_are_read_from_raw_bytes_as_torch_would():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {"w": nn.Parameter(torch.randn(3, 5)), "view": base[1:, ::2], "t": base.t(), "same": base,
             "i8": torch.randint(-128, 127, (7,), dtype=torch.int8), "b": torch.tensor([True, False]),
             "bf": torch.randn(4, dtype=torch.bfloat16), "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5)}
    buf = io.BytesIO()
    torch.save(state, buf)
    ours = read_torch_save(buf.getvalue(), "state")
    theirs = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert list(ours) == list(theirs)
    for k in theirs:
        assert type(ours[k]) is type(theirs[k]) and ours[k].dtype == theirs[k].dtype, k
        assert torch.equal(ours[k], theirs[k]) and ours[k].stride() == theirs[k].stride(), k
    assert ours["view"].untyped_storage().data_ptr() == ours["same"].untyped_storage().data_ptr()  # aliasing kept

