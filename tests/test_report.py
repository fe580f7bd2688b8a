"""``layerscope report``: a saved profile as one self-contained HTML page."""

import re

import pytest
from helpers import full_report, run


def test_report_has_a_dot_per_measured_layer_a_row_per_layer_and_the_comparison(capsys, tmp_path):
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "r.html"
    for path in (a, b):
        rc, _, err = run(capsys, "profile", "tiny_cnn", "--runs", "3", "--warmup", "1", "--hardware", "raspberry-pi-5", "--json",
                         str(path), "--no-history")
        assert rc == 0, err
    rc, text, err = run(capsys, "report", str(a), "--compare", str(b), "-o", str(out))
    assert rc == 0 and "Wrote" in text, err
    page = out.read_text()
    from layerscope.profiler import Profile

    p = Profile.load(a)
    measured = [r for r in p.rows() if r.point and r.point.intensity and r.point.attained_gflops]
    assert page.count('class="layer"') == len(measured) > 0  # one dot per layer with an intensity and a measured speed
    assert f"{len(measured)} of {len(p.graph)} layers plotted" in page
    ranked = page.split("Layers ranked by")[1].split("</table>")[0]
    assert ranked.count("<tr>") == len(p.graph) + 1  # header + one row per layer
    assert "Compared with b" in page and "By op type" in page and "By module" in page
    assert not re.search(r"(src|href)=['\"]https?://", page)  # nothing fetched at view time
    rc, _, err = run(capsys, "report", str(tmp_path / "missing.json"), "-o", str(out))
    assert rc == 2 and "missing.json" in err


@pytest.mark.toolchain
def test_report_sections_for_compiled_ops_and_compression_and_bad_inputs(capsys, tmp_path):
    import json

    profile, onnx, comp, out = full_report(capsys, tmp_path, "tiny_cnn", "int8")
    page = out.read_text()
    ops = json.loads(onnx.read_text())["ops"]
    compiled = page.split("id='compiled'>")[1].split("</table>")[0]
    assert compiled.count("<tr>") == len(ops) + 1 and "Coverage: <b>" in page
    data = json.loads(comp.read_text())
    compressed = page.split("id='compressed'>")[1].split("</table>")[0]
    assert compressed.count("<tr>") == len(data["layers"]) + 1
    assert page.count('class="pt ') == sum(1 for c in data["comparison"]["layers"] if c["sqnr_db"] is not None)
    assert f"Diagnostics ({len(data['diagnostics'])})" in page or not data["diagnostics"]
    assert "not about this model" not in page

    one = tmp_path / "one.json"  # one layer late in the model: every layer before it is identical (SQNR "inf" in the JSON)
    (tmp_path / "plan.json").write_text(json.dumps({"version": 1, "specs": [{"select": "fc", "technique": "quantize",
                                                                               "params": {"bits": 4}}]}))
    assert run(capsys, "compress", "tiny_cnn", "--plan", str(tmp_path / "plan.json"), "--runs", "2", "--json", str(one),
               "--no-history")[0] == 0
    exact = [c for c in json.loads(one.read_text())["comparison"]["layers"] if c["sqnr_db"] == "inf"]
    assert exact and run(capsys, "report", str(profile), "--compress", str(one), "-o", str(out))[0] == 0
    assert "data-v='Infinity'>exact</td>" in out.read_text() and out.read_text().count('class="pt ') < len(data["comparison"]["layers"])

    data["model"] = "resnet50"  # a compress report of another model is shown, and marked as such
    comp.write_text(json.dumps(data))
    assert run(capsys, "report", str(profile), "--compress", str(comp), "-o", str(out))[0] == 0
    assert "The compress report is of resnet50, this profile of tiny_cnn" in out.read_text()
    rc, _, err = run(capsys, "report", str(profile), "--compress", str(profile), "-o", str(out))
    assert rc == 2 and "is not a `layerscope compress --json` report" in " ".join(err.split())
    rc, _, err = run(capsys, "report", str(profile), "--onnx", str(profile), "-o", str(out))
    assert rc == 2 and "not a valid LayerScope ONNX mapping" in " ".join(err.split())
