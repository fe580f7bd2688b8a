"""``layerscope report``: a saved profile as one self-contained HTML page."""

import re

from helpers import run


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
