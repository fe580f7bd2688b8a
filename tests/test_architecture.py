import subprocess
import sys


def test_importing_the_core_loads_no_qt():
    code = ("import sys, layerscope, layerscope.profiler, layerscope.profiler.profile, layerscope.profiler.sweep, layerscope.cli.main; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'superqt')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_linter_contract_holds():
    from pathlib import Path

    root = Path(__file__).parents[1]
    r = subprocess.run(["bash", str(root / "scripts" / "lint_imports.sh")], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    # the core's, the command line's, the core's layers and the layers inside capture, hardware, history
    assert "Contracts: 4 kept, 0 broken" in r.stdout


def test_every_package_folder_is_installed_and_every_layer_is_named():
    """pyproject's package list names every folder with an __init__.py (a package left out installs
    without its modules), and the core's layers contract names every package and module of the core."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[1]
    conf = tomllib.loads((root / "pyproject.toml").read_text())
    roots = {v: k for k, v in conf["tool"]["setuptools"]["package-dir"].items()}
    found = set()
    for folder, name in roots.items():
        for init in (root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(root / folder)
            found.add(".".join([name, *rel.parts]))
    data = {f"layerscope.assets.{p.name}" for p in (root / "assets").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert found | data == set(conf["tool"]["setuptools"]["packages"])
    contract = next(c for c in conf["tool"]["importlinter"]["contracts"] if c.get("containers") == ["layerscope.profiler"])
    named = {n.strip() for layer in contract["layers"] for n in layer.split(":")}
    parts = {p.stem if p.is_file() else p.name for p in (root / "profiler").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert named == parts and contract["exhaustive"]


def test_workflows_have_one_home():
    """The app and the CLI drive the core's jobs; neither defines a workflow of its own."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[1]
    for face in ("app", "cli"):
        for f in (root / face).glob("*.py"):
            assert not re.search(r"^def \w+_job\(", f.read_text(), re.M), f"{f} defines a job: it belongs in profiler/jobs.py"


def test_technique_parameters_are_read_from_their_specs():
    """No technique default is restated at a call site: the core reads typed params (compression/specs.py)."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[1] / "profiler"
    hits = [f"{f}:{n}" for f in root.rglob("*.py") for n, line in enumerate(f.read_text().splitlines(), 1)
            if re.search(r"params\.get\(", line)]
    assert not hits, hits


def test_warnings_from_layerscope_code_fail_the_suite():
    """pytest's filterwarnings turns a warning issued in a layerscope module into an error (pyproject.toml)."""
    import pytest

    with pytest.raises(DeprecationWarning):
        exec("import warnings; warnings.warn('old API', DeprecationWarning)", {"__name__": "layerscope.profiler.example"})
