"""Peak memory of each workflow as a multiple of the model's weight bytes.

Each workflow runs in a fresh process (so peaks do not mix) and reports its peak RSS
(``ru_maxrss``). Two numbers per row:

* ``peak/weights``: peak RSS over weight bytes, what a user's machine must hold;
* ``(peak-base)/weights``: the same after subtracting the process's footprint before the model
  was loaded (Python, torch, ONNX Runtime imported) — the multiple of the weights the workflow
  itself holds. The target is ~2x: the original and one compressed copy.

``ort-alone`` is the peer for ``ort-int8``: ONNX Runtime's own ``quantize_static`` on the same
exported model (external data), in a process that holds nothing else. LayerScope's ORT int8
path cannot need less than that; the difference is what LayerScope adds (the torch model).

Models: resnet50 (25.6M parameters) and a GPT-style decoder of ~320M parameters (dim 1024, 24
blocks) built in code with random weights. Nothing is downloaded.

    .venv/bin/python bench/memory.py                   # both models, every workflow
    .venv/bin/python bench/memory.py --models resnet50 --workflows profile compress
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

WORKFLOWS = ["load", "profile", "compress", "compare", "ort-int8", "ort-alone"]
BIG = textwrap.dedent("""
    import torch
    from layerscope.profiler.files.zoo import GPTDecoder

    def gpt_320m():
        torch.manual_seed(0)
        return GPTDecoder(vocab=8192, context=256, dim=1024, depth=24, heads=16).eval(), (torch.randint(0, 8192, (1, 128)),)
""")

CHILD = textwrap.dedent("""
    import json, resource, sys, torch
    torch.set_num_threads(2)
    import onnxruntime  # noqa: F401 - part of the fixed footprint, loaded by every workflow that exports
    from layerscope.profiler import drive, load_device_profile, load_model, profile_model
    from layerscope.profiler.compression import estimate_plan, apply_plan, resolve_plan
    from layerscope.profiler.compression.apply import model_bytes
    from layerscope.profiler.compression.pipeline import compress
    from layerscope.profiler.files.data import samples_for
    from layerscope.profiler.compare import compare_models

    def rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    spec, workflow = sys.argv[1], sys.argv[2]
    if workflow == "ort-alone":  # the peer: ORT's quantizer on the same model, exported by a previous process
        import numpy as np
        from pathlib import Path
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        folder = Path(sys.argv[3])
        x = np.load(folder / "x.npy")
        base = rss()

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{sys.argv[4]: x}] * 2)

            def get_next(self):
                return next(self.it, None)

        quantize_static(str(folder / "float.onnx"), str(folder / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                        use_external_data_format=True)
        weights = sum(p.stat().st_size for p in folder.glob("float.onnx*"))
        print(json.dumps({"base": base, "peak": rss(), "weights": weights}))
        sys.exit(0)
    if workflow == "export":  # set-up for ort-alone, not measured
        from pathlib import Path
        import numpy as np
        from layerscope.profiler.runtimes.onnx import export_onnx
        loaded = load_model(spec)
        folder = Path(sys.argv[3])
        export_onnx(loaded.module, loaded.inputs, folder / "float.onnx", external_data=True)
        np.save(folder / "x.npy", loaded.inputs[0].numpy())
        import onnx
        print(json.dumps({"input": onnx.load(str(folder / "float.onnx"), load_external_data=False).graph.input[0].name}))
        sys.exit(0)
    base = rss()
    loaded = load_model(spec)
    weights = model_bytes(loaded.module)
    hw = load_device_profile("raspberry-pi-5")  # no calibration: the roof does not matter here
    if workflow != "load":
        profile = drive(profile_model(loaded, hw, runs=2, warmup=1))
        samples = samples_for(loaded, None, 2)
        plan = estimate_plan("int8" if workflow == "ort-int8" else "int8-weights", loaded.name)
        if workflow in ("compress", "ort-int8"):
            outcome = drive(compress(loaded, profile, plan, samples, hw, runs=2, ort_int8=workflow == "ort-int8"))
        elif workflow == "compare":
            resolved, warnings = resolve_plan(plan, profile)
            cand, _ = drive(apply_plan(loaded.module, profile.graph, resolved, samples, warnings))
            drive(compare_models(loaded.module, cand, samples))
    print(json.dumps({"base": base, "peak": rss(), "weights": weights}))
""")


def _child(*argv: str) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="layerscope-bench-cache-")}
    out = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(spec: str, workflow: str) -> dict:
    if workflow != "ort-alone":
        return _child(spec, workflow)
    with tempfile.TemporaryDirectory(prefix="layerscope-bench-ort-") as folder:
        name = _child(spec, "export", folder)["input"]
        return _child(spec, "ort-alone", folder, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet50", "gpt-320m"])
    ap.add_argument("--workflows", nargs="+", default=WORKFLOWS, choices=WORKFLOWS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big_models.py"
        big.write_text(BIG)
        specs = {"resnet50": "resnet50", "gpt-320m": f"{big}:gpt_320m"}
        print(f"{'model':<10} {'workflow':<10} {'weights':>10} {'base RSS':>10} {'peak RSS':>10} {'peak/weights':>13} "
              f"{'(peak-base)/weights':>20}")
        for name in args.models:
            for wf in args.workflows:
                r = measure(specs[name], wf)
                gib = 2**30
                print(f"{name:<10} {wf:<10} {r['weights'] / gib:9.2f}G {r['base'] / gib:9.2f}G {r['peak'] / gib:9.2f}G "
                      f"{r['peak'] / r['weights']:12.2f}x {(r['peak'] - r['base']) / r['weights']:19.2f}x", flush=True)


if __name__ == "__main__":
    main()
