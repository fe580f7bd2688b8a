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
    assert "Contracts: 3 kept, 0 broken" in r.stdout  # the core's, the command line's and the core's layers


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
