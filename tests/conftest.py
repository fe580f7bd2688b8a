import os
import tempfile
import textwrap

# Without a display pytest-qt aborts; offscreen renders real widgets (see ENVIRONMENT.md).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# runs the tests make are recorded in a throw-away history, never in the user's own
os.environ.setdefault("LAYERSCOPE_HISTORY", os.path.join(tempfile.mkdtemp(prefix="layerscope-test-history-"), "history.sqlite"))

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Calibration results go to a temporary cache, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def pi5():
    from layerscope.profiler import load_device_profile

    return load_device_profile("raspberry-pi-5")


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
    """A file.py of model factories a user might write: a small MLP, and a model whose forward raises."""
    f = tmp_path / "factories.py"
    f.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def mlp():
            return nn.Sequential(nn.Linear(4, 3), nn.ReLU()), (torch.randn(2, 4),)

        class Raises(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
            def forward(self, x):
                raise ValueError("this forward always fails")

        def raises():
            return Raises(), (torch.randn(2, 4),)
    """))
    return f
