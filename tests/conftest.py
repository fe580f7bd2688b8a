import os
import shutil
import tempfile
import textwrap
from pathlib import Path

# Without a display pytest-qt aborts; offscreen renders real widgets (see ENVIRONMENT.md).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# runs the tests make are recorded in a throw-away history, never in the user's own
os.environ.setdefault("LAYERSCOPE_HISTORY", os.path.join(tempfile.mkdtemp(prefix="layerscope-test-history-"), "history.sqlite"))

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# This machine's calibration, measured once per session: the first test that calibrates leaves its clean
# result here, and every later test's private cache starts with it instead of measuring the machine again.
_CALIBRATIONS = Path(tempfile.mkdtemp(prefix="layerscope-test-calibration-"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch, request):
    """Calibration results go to a temporary cache, never the user's (nor into the test's tmp_path). It holds the
    session's calibration unless the test is marked ``fresh_cache`` (tests of the calibration cache itself)."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    own = cache / "layerscope"
    fresh = request.node.get_closest_marker("fresh_cache") is not None
    if not fresh:
        seeded = list(_CALIBRATIONS.glob("hardware-*.json"))
        if seeded:
            own.mkdir(parents=True, exist_ok=True)
            for f in seeded:
                shutil.copy2(f, own / f.name)
    yield
    if not fresh:
        for f in own.glob("hardware-*.json"):  # clean calibrations only: a provisional (busy) one says so in every profile
            if not f.name.endswith(".provisional.json") and not (_CALIBRATIONS / f.name).exists():
                shutil.copy2(f, _CALIBRATIONS / f.name)


@pytest.fixture
def pi5():
    from layerscope.profiler import load_device_profile

    return load_device_profile("raspberry-pi-5")


@pytest.fixture(scope="session")
def tiny():
    """tiny_cnn, its profile (2 runs after 1 warm-up, datasheet roof: no calibration) and that roof."""
    from layerscope.profiler import drive, load_device_profile, load_model, profile_model

    hw = load_device_profile("raspberry-pi-5")
    loaded = load_model("tiny_cnn")
    return loaded, drive(profile_model(loaded, hw, runs=2, warmup=1)), hw


@pytest.fixture(scope="session")
def tiny_profile():
    """tiny_cnn profiled against a datasheet roof (no calibration): 3 runs after 1 warm-up."""
    from layerscope.profiler import drive, load_device_profile, load_model, profile_model

    return drive(profile_model(load_model("tiny_cnn"), load_device_profile("raspberry-pi-5"), runs=3, warmup=1))


@pytest.fixture
def window(qtbot):
    """The real main window, shown offscreen, without modal dialogs."""
    from layerscope.app.main_window import MainWindow

    win = MainWindow(show_dialogs=False)
    qtbot.addWidget(win)
    win.show()
    return win


@pytest.fixture
def factory_py(tmp_path):
    """A file.py of model factories a user might write: one that raises (its line is 6: the error names it),
    a branch on a tensor's value, a small MLP, NaN weights, and a model whose forward raises."""
    f = tmp_path / "models.py"
    f.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def raises():
            raise RuntimeError("checkpoint missing")

        class Branchy(nn.Module):
            def __init__(self):
                super().__init__()
                self.l = nn.Linear(4, 4)
            def forward(self, x):
                if x.sum() > 0:
                    return self.l(x)
                return -self.l(x)

        def branchy():
            return Branchy(), (torch.randn(2, 4),)

        def mlp():
            return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (torch.randn(2, 4),)

        def nan_weights():
            m = nn.Linear(4, 4)
            with torch.no_grad():
                m.weight[0, 0] = float("nan")
            return m, (torch.randn(1, 4),)

        class ForwardRaises(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
            def forward(self, x):
                raise ValueError("this forward always fails")

        def forward_raises():
            return ForwardRaises(), (torch.randn(2, 4),)
    """))
    return f
