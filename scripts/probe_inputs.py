"""Throw bad inputs at every command, as a demanding user or an attacker would, and count outcomes.

Each probe runs ``layerscope`` in a fresh process with its own cache folder and classifies what
came back:

* ``clean``      exit 2 with an ``error:`` line and no traceback (or, for a probe that should
                 work, exit 0);
* ``traceback``  a Python traceback reached the user;
* ``hang``       no answer within the time limit;
* ``crash``      killed by a signal or another exit code;
* ``wrong``      exit 0 where the input is bad (silently wrong output);
* ``destroyed``  a good output file that existed before is not byte-identical afterwards;
* ``executed``   a crafted model file ran its payload (a marker file appeared);
* ``leftover``   a work folder was left in the cache.

    python scripts/probe_inputs.py            # all probes, 2 at a time
    python scripts/probe_inputs.py -k pt2     # only probes whose name contains "pt2"
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
FAST = ["--runs", "1", "--hardware", "raspberry-pi-5"]


@dataclass
class Probe:
    name: str
    argv: list[str]
    ok: bool = False  # True: a good input; it must work
    keep: list[str] = field(default_factory=list)  # output files that must survive byte for byte
    marker: str = ""  # a file a crafted input would write
    timeout: int = 240
    cache: bytes | str | None = None  # the calibration cache to plant first ("dir": a folder in its place)
    cwd: str = ""  # run in this folder (default: a fresh one), as `python -m layerscope` in a colleague's folder would


def build(root: Path) -> list[Probe]:
    import crafted
    import numpy as np

    (root / "factories.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        def mlp():
            return nn.Sequential(nn.Linear(4, 3), nn.ReLU()), (torch.randn(2, 4),)
        def raises():
            raise RuntimeError("checkpoint missing")
        def not_a_module():
            return 42
        class Fails(nn.Module):
            def forward(self, x):
                raise ValueError("forward always fails")
        def fails():
            return Fails(), (torch.randn(2, 4),)
        def nan_weights():
            m = nn.Linear(4, 4)
            with torch.no_grad():
                m.weight[0, 0] = float("nan")
            return m, (torch.randn(1, 4),)
    """))
    (root / "syntax.py").write_text("def f(:\n")
    (root / "good.json").write_text('{"keep": "me"}')
    (root / "empty.pt2").write_bytes(b"")
    (root / "dir.pt2").mkdir()
    (root / "afile").write_text("x")
    base = crafted.base_program(root / "base.pt2")
    (root / "truncated.pt2").write_bytes(base.read_bytes()[:500])
    probes: list[Probe] = []
    f = f"{root}/factories.py"

    # ---- crafted model files through every loader
    for variant, make in crafted.VARIANTS.items():
        for cmd in ("profile", "onnx", "compress", "compare"):
            marker = root / f"marker-{variant}-{cmd}"
            if variant in ("enum_escape", "planted_class"):  # the module it names, planted beside the model (cwd is on sys.path)
                crafted.plant_module(root, marker)
            evil = make(base, root / f"{variant}-{cmd}.pt2", marker)
            argv = {"profile": ["profile", str(evil), *FAST], "onnx": ["onnx", str(evil), "--runs", "1"],
                    "compress": ["compress", str(evil), "--estimate", "fp16", "--samples", "1", *FAST],
                    "compare": ["compare", f"{f}:mlp", "--against", str(evil), "--samples", "1", *FAST]}[cmd]
            # input guards are never run: that file loads (and must not run its payload); compare --against it
            # refuses on other grounds (an exported program is not the factory's module)
            loads = variant in ("guard_code", "planted_class") and cmd != "compare"
            probes.append(Probe(f"pt2-{variant}-{cmd}", argv, marker=str(marker), ok=loads, cwd=str(root)))
    for name in ("empty.pt2", "dir.pt2", "truncated.pt2", "missing.pt2"):
        probes.append(Probe(f"pt2-{name}", ["profile", str(root / name), *FAST]))

    # ---- model sources
    for spec in (f"{f}:raises", f"{f}:not_a_module", f"{f}:fails", f"{f}:nan_weights", f"{f}:nope", f"{root}/syntax.py:f",
                 f"{root}/missing.py:f", f"{f}", "resnet51", "", " "):
        probes.append(Probe(f"model-{spec.rsplit('/', 1)[-1] or 'empty'}", ["profile", spec, *FAST]))
    probes.append(Probe("onnx-forward-raises", ["onnx", f"{f}:fails", "--runs", "1"]))

    # ---- outputs: unwritable places, checked before work; existing good files survive
    for cmd, extra in (("profile", ["tiny_cnn", *FAST]), ("onnx", ["tiny_cnn", "--runs", "1"]),
                       ("compress", ["tiny_cnn", "--estimate", "fp16", "--samples", "1", *FAST])):
        for where in ("missing/x.json", "afile/x.json", "."):
            probes.append(Probe(f"out-{cmd}-json-{where}", [cmd, *extra, "--json", str(root / where)]))
    for flag in ("--out", "--onnx", "--save-plan", "--export-coreml", "--export-torchao"):
        probes.append(Probe(f"out-compress{flag}-missing", ["compress", "tiny_cnn", "--estimate", "int8-weights",
                                                             "--samples", "1", *FAST, flag, str(root / "missing" / "x")]))
    probes.append(Probe("out-compare-json-missing", ["compare", "tiny_cnn", "--plan", str(root / "plan-ok.json"),
                                                       "--json", str(root / "missing/x.json"), *FAST]))
    # a full disk: a 2 MiB tmpfs where possible (root on Linux), with a good file in it
    full = root / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(full)], capture_output=True).returncode == 0
    if mounted:
        for name in ("p.json", "p.csv", "o.json"):
            (full / name).write_text('{"good": true}')
        (full / "m.pt2").write_bytes(base.read_bytes())
        free = os.statvfs(full).f_bavail * os.statvfs(full).f_frsize
        (full / "filler").write_bytes(b"\0" * max(0, free - 4096))  # 4 KiB left: no real output fits
        probes.append(Probe("full-disk-profile-json", ["profile", "resnet18", *FAST, "--json", str(full / "p.json")],
                            keep=[str(full / "p.json")]))
        probes.append(Probe("full-disk-profile-csv", ["profile", "resnet18", *FAST, "--csv", str(full / "p.csv")],
                            keep=[str(full / "p.csv")]))
        probes.append(Probe("full-disk-compress-out", ["compress", "resnet18", "--estimate", "fp16", "--samples", "1", *FAST,
                                                        "--out", str(full / "m.pt2")], keep=[str(full / "m.pt2")]))
        probes.append(Probe("full-disk-onnx-json", ["onnx", "resnet18", "--runs", "1", "--json", str(full / "o.json")],
                            keep=[str(full / "o.json")]))

    # ---- JSON inputs: plans and hardware profiles
    plans = {
        "ok": {"version": 1, "specs": [{"select": "all", "technique": "quantize", "params": {"bits": 8}}]},
        "top-neg": {"version": 1, "specs": [{"select": "top:-1", "technique": "quantize"}]},
        "regex-hang": {"version": 1, "specs": [{"select": "re:^(.|.|.)*!$", "technique": "quantize"}]},
        "backref": {"version": 1, "specs": [{"select": r"re:(a)\1", "technique": "quantize"}]},
        "bits-str": {"version": 1, "specs": [{"select": "all", "technique": "quantize", "params": {"bits": "8"}}]},
        "bits-big": {"version": 1, "specs": [{"select": "all", "technique": "quantize", "params": {"bits": 10**40}}]},
        "pct-inf": {"version": 1, "specs": [{"select": "all", "technique": "quantize", "params": {"act_percentile": 1e999}}]},
        "params-list": {"version": 1, "specs": [{"select": "all", "technique": "quantize", "params": [1]}]},
        "no-specs": {"version": 1}, "version-2": {"version": 2, "specs": []}, "list": [1, 2],
        "select-int": {"version": 1, "specs": [{"select": 5, "technique": "cast"}]},
        "bn": {"version": 1, "specs": [{"select": "bn1", "technique": "quantize"}]},
    }
    raw_plans = {"deep": "[" * 100_000 + "]" * 100_000, "bigint": '{"version": ' + "9" * 5000 + "}",
                 "nan": '{"version": NaN}', "trunc": '{"version": 1, "specs": [', "empty": ""}
    for name, doc in plans.items():
        (root / f"plan-{name}.json").write_text(json.dumps(doc))
    for name, text in raw_plans.items():
        (root / f"plan-{name}.json").write_text(text)
    (root / "plan-utf.json").write_bytes(b"\xff\xfe{")
    for name in [*plans, *raw_plans, "utf", "missing"]:
        if name == "ok":
            continue
        probes.append(Probe(f"plan-{name}", ["compress", "tiny_cnn", "--plan", str(root / f"plan-{name}.json"), "--samples", "1", *FAST]))
    probes.append(Probe("plan-ok", ["compress", "tiny_cnn", "--plan", str(root / "plan-ok.json"), "--samples", "1", *FAST], ok=True))
    hw = {"nan": '{"name": "x", "peak_gflops": {"float32": NaN}, "bandwidth_gbs": 1, "source": "s"}',
          "null": '{"name": "x", "peak_gflops": {"float32": null}, "bandwidth_gbs": 1, "source": "s"}',
          "inf": '{"name": "x", "peak_gflops": {"float32": 1e999}, "bandwidth_gbs": 1, "source": "s"}',
          "zero": '{"name": "x", "peak_gflops": {"float32": 0}, "bandwidth_gbs": 1, "source": "s"}',
          "neg-bw": '{"name": "x", "peak_gflops": {"float32": 1}, "bandwidth_gbs": -5, "source": "s"}',
          "str": '{"name": "x", "peak_gflops": {"float32": "fast"}, "bandwidth_gbs": 1, "source": "s"}',
          "missing": '{"name": "x", "peak_gflops": {"float32": 1}}', "list": "[]", "deep": "[" * 50_000 + "]" * 50_000}
    for name, text in hw.items():
        (root / f"hw-{name}.json").write_text(text)
        probes.append(Probe(f"hardware-{name}", ["profile", "tiny_cnn", "--runs", "1", "--hardware", str(root / f"hw-{name}.json")]))
    (root / "hw-utf.json").write_bytes(b"\xff{")
    probes.append(Probe("hardware-utf", ["profile", "tiny_cnn", "--runs", "1", "--hardware", str(root / "hw-utf.json")]))

    # ---- a poisoned calibration cache is re-measured (the probe must work, with a note)
    for name, content in (("nan", b'{"name": "x", "peak_gflops": {"float32": null}, "bandwidth_gbs": 40, "source": "s"}'),
                          ("utf", b"\xff\xfe"), ("deep", b"[" * 50_000), ("dir", "dir")):
        probes.append(Probe(f"cache-{name}", ["profile", "tiny_cnn", "--runs", "1"], ok=True, cache=content))

    # ---- degenerate values and resource guards
    for argv in (["--device", "meta"], ["--device", "garbage"], ["--device", "cuda"], ["--device", "mps"], ["--runs", "0"],
                 ["--warmup", "-1"], ["--input-shape", "0,3,8,8"], ["--input-shape", "1,3,-8,8"], ["--input-shape", "a,b"],
                 ["--input-shape", "1,3,100000,100000"], ["--input-shape", "1,3,12000,12000", "--max-memory", "4"],
                 ["--input-shape", ",".join(["1"] * 13)], ["--input-shape", "1," + "9" * 5000], ["--input-shape", "1,3,8,8;1,3,8,8"],
                 ["--max-memory", "-1"], ["--max-memory", "nan"], ["--dtype", "int8"]):
        probes.append(Probe(f"arg-profile{'_'.join(argv)[:40]}", ["profile", "tiny_cnn", "--hardware", "raspberry-pi-5", *argv]))
    for size in ("0", "-1", "1000000", "abc"):
        probes.append(Probe(f"calibrate-size-{size}", ["calibrate", "--size", size]))
    for n in ("0", "-1", "1000000000"):
        probes.append(Probe(f"samples-{n}", ["compress", "tiny_cnn", "--estimate", "fp16", "--samples", n, *FAST]))
    data = {"empty": None, "zero": {"x": np.zeros((0, 3, 32, 32), np.float32)},
            "nan": {"x": np.full((2, 3, 32, 32), np.nan, np.float32)}, "shape": {"x": np.zeros((2, 3, 8, 8), np.float32)},
            "labels-float": {"x": np.zeros((2, 3, 32, 32), np.float32), "y": np.zeros(2, np.float32)}, "junk": b"junk"}
    for name, arrays in data.items():
        d = root / f"data-{name}"
        d.mkdir()
        if isinstance(arrays, dict):
            np.savez(d / "b0.npz", **arrays)
        elif arrays is not None:
            (d / "b0.npz").write_bytes(arrays)
        probes.append(Probe(f"data-{name}", ["compress", "tiny_cnn", "--estimate", "fp16", "--data", str(d), *FAST]))

    # ---- ONNX files
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100000, 100000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 100000, 100000])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)]), root / "huge.onnx")
    (root / "corrupt.onnx").write_bytes(b"\x08\x07garbage")
    (root / "empty.onnx").write_bytes(b"")
    for name in ("huge.onnx", "corrupt.onnx", "empty.onnx", "missing.onnx"):
        probes.append(Probe(f"onnx-{name}", ["onnx", str(root / name), "--runs", "1"]))
    probes.append(Probe("onnx-provider", ["onnx", "tiny_cnn", "--provider", "NopeExecutionProvider"]))
    probes.append(Probe("onnx-ok", ["onnx", "tiny_cnn", "--runs", "1"], ok=True))
    probes.append(Probe("profile-ok", ["profile", "tiny_cnn", *FAST], ok=True))

    # ---- outputs that would replace the user's files
    mine = root / "my-folder"
    mine.mkdir()
    (mine / "model.onnx").write_text("my own model")
    for flag, cmd in (("--workdir", ["onnx", "tiny_cnn", "--runs", "1"]), ("--model-explorer", ["profile", "tiny_cnn", *FAST]),
                      ("--out", ["sweep", "tiny_cnn", "--max-size-ratio", "0.5"])):
        probes.append(Probe(f"folder-{flag}", [*cmd, flag, str(mine)], keep=[str(mine / "model.onnx")]))
    (root / "p.json").write_text("{}")
    probes.append(Probe("report-out-is-input", ["report", str(root / "p.json"), "-o", str(root / "p.json")],
                        keep=[str(root / "p.json")]))
    return probes


def run_probe(p: Probe, root: Path) -> tuple[str, str]:
    work = Path(tempfile.mkdtemp(prefix="probe-" + "".join(c if c.isalnum() else "_" for c in p.name[:24]) + "-", dir=root))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "QT_QPA_PLATFORM": "offscreen"}
    if p.cache is not None:
        import socket

        cached = work / "cache" / "layerscope" / f"hardware-{socket.gethostname()}-cpu.json"
        cached.parent.mkdir(parents=True)
        cached.mkdir() if p.cache == "dir" else cached.write_bytes(p.cache)
    before = {k: Path(k).read_bytes() for k in p.keep}
    try:
        out = subprocess.run([sys.executable, "-m", "layerscope.cli.main", "-q", *p.argv], cwd=p.cwd or work, env=env,
                             capture_output=True, text=True, timeout=p.timeout, check=False)
    except subprocess.TimeoutExpired:
        return "hang", ""
    text = out.stdout + out.stderr
    last = (out.stderr.strip().splitlines() or [""])[-1][:160]
    if p.marker and Path(p.marker).exists():
        return "executed", last
    if out.returncode != 0 and any(Path(k).read_bytes() != v for k, v in before.items()):
        return "destroyed", last  # a failed run must leave an existing output exactly as it was
    leftovers = list((work / "cache" / "layerscope" / "work").glob("*")) if (work / "cache" / "layerscope" / "work").is_dir() else []
    if leftovers:
        return "leftover", str(leftovers[0])
    if "Traceback" in text:
        return "traceback", last
    if out.returncode < 0 or out.returncode not in (0, 2):
        return "crash", f"exit {out.returncode}: {last}"
    if p.ok:
        return ("clean", "") if out.returncode == 0 else ("wrong", last)
    if out.returncode == 0:
        return "wrong", "exit 0 on a bad input"
    return ("clean", last) if "error:" in out.stderr else ("crash", last)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="", help="only probes whose name contains this")
    ap.add_argument("-j", type=int, default=2, help="probes run at once (default 2)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="layerscope-probes-"))
    try:
        probes = [p for p in build(root) if args.k in p.name]
        counts: collections.Counter[str] = collections.Counter()
        with cf.ThreadPoolExecutor(args.j) as pool:
            for p, (verdict, detail) in zip(probes, pool.map(lambda p: run_probe(p, root), probes), strict=True):
                counts[verdict] += 1
                print(f"{verdict:<10} {p.name:<44} {detail}", flush=True)
        print(f"\n{len(probes)} probes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return 0 if set(counts) <= {"clean"} else 1
    finally:
        full = root / "full"
        if full.is_dir():
            subprocess.run(["umount", str(full)], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
