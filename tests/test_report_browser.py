"""``layerscope report`` in a real headless Chromium: the page renders (every roofline dot and SQNR dot is laid
out inside its plot), clicking a header sorts the table (both ways), and the plot has one dot per measured layer.

The checks run as a script appended to a copy of the report; Chromium's ``--dump-dom`` prints the page after
its scripts ran, with the script's findings in one element. Skipped where no Chromium is installed
(``scripts/test.sh`` installs Debian's package where it can)."""

import json
import os
import re
import shutil
import subprocess

import pytest
from helpers import full_report

CHROMIUM = os.environ.get("LAYERSCOPE_CHROMIUM") or next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")) if p), None)
pytestmark = [pytest.mark.toolchain,  # a headless Chromium
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium)")]

CHECKS = """
<pre id="layerscope-test"></pre><script>
(function(){
  function inside(svg, el){var a=svg.getBoundingClientRect(),b=el.getBoundingClientRect();
    return b.width>0&&b.height>0&&b.left>=a.left&&b.right<=a.right&&b.top>=a.top&&b.bottom<=a.bottom;}
  function dots(sel, cls){var svg=document.querySelector(sel);if(!svg)return [0,0];var all=svg.querySelectorAll('circle.'+cls);
    return [all.length, Array.from(all).filter(function(c){return inside(svg,c);}).length];}
  function column(table, name){var ths=Array.from(table.tHead.rows[0].cells);var i=ths.findIndex(function(t){return t.textContent===name;});
    return {th:ths[i], values:function(){return Array.from(table.tBodies[0].rows).map(function(r){
      var c=r.cells[i];return c.dataset.v!==undefined?parseFloat(c.dataset.v):null;}).filter(function(v){return v!==null;});}};}
  function sorted(v, asc){for(var k=1;k<v.length;k++){if(asc?v[k]<v[k-1]:v[k]>v[k-1])return false;}return v.length>1;}
  function sorts(table, name){var c=column(table,name);c.th.click();var up=sorted(c.values(),true);
    var first=table.tBodies[0].rows[0].cells[1].textContent;c.th.click();return {asc:up, desc:sorted(c.values(),false), first:first};}
  var tables=document.querySelectorAll('table.sortable');
  var out={roofline:dots('svg.plot','layer'), sqnr:dots('#sqnr','pt'),
           ranked:sorts(tables[0],'FLOPs'), compiled:sorts(document.getElementById('compiled'),'ms'),
           compressed:sorts(document.getElementById('compressed'),'SQNR'),
           rows:tables[0].tBodies[0].rows.length, width:document.body.scrollWidth};
  document.getElementById('layerscope-test').textContent=JSON.stringify(out);
})();
</script>"""


def _in_chromium(page_path, tmp_path) -> dict:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,2000", "--dump-dom", page_path.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="layerscope-test">(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1), f"Chromium printed no result (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def test_report_renders_sorts_and_plots_a_dot_per_layer_in_chromium(capsys, tmp_path):
    profile, _, comp, out = full_report(capsys, tmp_path, "digits_cnn", "int8-weights", runs=3)
    page = out.read_text()
    harness = tmp_path / "harness.html"
    harness.write_text(page.replace("</body>", CHECKS + "</body>"))
    got = _in_chromium(harness, tmp_path)

    from layerscope.profiler import Profile

    p = Profile.load(profile)
    measured = [r for r in p.rows() if r.point and r.point.intensity and r.point.attained_gflops]
    assert got["roofline"] == [len(measured), len(measured)] and len(measured) >= 10  # every dot drawn inside the plot
    compared = [c for c in json.loads(comp.read_text())["comparison"]["layers"] if c["sqnr_db"] is not None]
    assert got["sqnr"] == [len(compared), len(compared)]
    assert got["rows"] == len(p.graph)
    for table in ("ranked", "compiled", "compressed"):  # a click sorts ascending, a second click descending
        assert got[table]["asc"] and got[table]["desc"], (table, got[table])
    assert got["ranked"]["first"] == "flatten"  # no FLOPs: first when sorted by FLOPs ascending
