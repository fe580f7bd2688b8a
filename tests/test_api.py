"""The Python API a user meets first: ``import layerscope; layerscope.profile(model, inputs)``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import layerscope
from layerscope.profiler import LayerScopeError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_snippet_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    snippet = next(b for b in blocks if "layerscope.profile(" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("<Profile Sequential: 4 layers") and (tmp_path / "model.profile.json").exists()
    assert layerscope.Profile.load(tmp_path / "model.profile.json").model.name == "Sequential"


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.fc = torch.nn.Linear(8, 2)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, input_ids, attention_mask=None):
        h = self.drop(self.emb(input_ids))
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1)
        return self.fc(h.mean(1))


def test_profile_in_memory_model_with_keyword_inputs_leaves_it_as_it_was():
    model = TwoInputs().train()
    ids, mask = torch.randint(0, 50, (2, 6)), torch.ones(2, 6)
    p = layerscope.profile(model, {"input_ids": ids, "attention_mask": mask}, hardware="raspberry-pi-5", runs=2, warmup=1)
    assert {"emb", "fc"} <= set(p.graph.ids()) and p.timings
    # 2*M*N*K for the classifier: 2 * 2 * 2 * 8 = 64 FLOPs (plus its bias adds)
    assert p.metrics["fc"].macs == 2 * 2 * 8
    assert model.training  # profiled in eval mode, handed back in the mode it came in
    static = layerscope.profile(model, ids, kwargs={"attention_mask": mask}, static=True, hardware="raspberry-pi-5")
    assert static.static and static.metrics["fc"].macs == p.metrics["fc"].macs
    html = p._repr_html_()  # what a notebook shows
    assert "<table>" in html and "emb" in html and repr(p).startswith("<Profile TwoInputs:")
    with pytest.raises(LayerScopeError, match="not all tensors"):
        layerscope.profile(model, (ids, "mask"), static=True, hardware="raspberry-pi-5")
    with pytest.raises(LayerScopeError, match="pass an nn.Module"):
        layerscope.profile(lambda x: x, ids, static=True)


def test_to_dataframe_has_a_row_per_layer():
    pd = pytest.importorskip("pandas")
    p = layerscope.profile(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU()), torch.randn(3, 4), static=True,
                           hardware="raspberry-pi-5")
    df = p.to_dataframe()
    assert isinstance(df, pd.DataFrame) and len(df) == len(p.graph) and list(df["layer"]) == list(p.graph.ids())
    assert df.loc[df["layer"] == "0", "macs"].item() == 3 * 4 * 8  # M*N*K = 3*8*4


def test_python_dash_m_layerscope_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "layerscope", "zoo"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "digits_cnn" in out.stdout
