"""Fuzzing every JSON LayerScope reads — plans, hardware profiles, saved profiles: only a
LayerScopeError may come out, and whatever loads can be used by every view without failing."""

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerscope.profiler import HardwareProfile, LayerScopeError, Profile
from layerscope.profiler.compression import CompressionPlan, resolve_plan
from layerscope.profiler.compression.specs import PARAMS, TECHNIQUES

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])
scalars = (st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(["inf", "-inf", "nan", "", "all", "1e999"]) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)
selectors = (st.sampled_from(["all", "memory-bound", "compute-bound", "type:Conv2d", "type:Linear", "conv1", "glob:*",
                              "glob:conv*", "top:3", "top:-1", "top:0", "top:", "re:", "re:(", "re:^(.|.|.)*!$",
                              r"re:(a)\1", "re:(?=x)", "bn1", "nothing"])
             | st.text(max_size=20) | st.text(max_size=20).map(lambda t: "re:" + t)
             | st.integers(-(10**6), 10**6).map(lambda n: f"top:{n}"))
params = st.dictionaries(st.sampled_from(sorted({f.name for c in PARAMS.values() for f in dataclasses.fields(c)}) + ["nope"]), json_values, max_size=4)
specs = st.fixed_dictionaries({"select": selectors | json_values, "technique": st.sampled_from(TECHNIQUES) | json_values,
                               "params": params | json_values})
plans = st.fixed_dictionaries({"version": st.just(1) | json_values, "specs": st.lists(specs | json_values, max_size=4)
                               | json_values}) | json_values


def _only_layerscope_errors(fn, *args):
    try:
        return fn(*args)
    except LayerScopeError:
        return None


@FUZZ
@given(doc=plans)
def test_fuzzed_plans_give_only_plan_errors(tiny_profile, doc):
    plan = _only_layerscope_errors(CompressionPlan.from_json, json.dumps(doc))
    if plan is not None:
        _only_layerscope_errors(resolve_plan, plan, tiny_profile)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_fuzzed_bytes_give_only_clear_errors(tiny_profile, raw):
    _only_layerscope_errors(CompressionPlan.from_json, raw)
    _only_layerscope_errors(HardwareProfile.from_json, raw)
    _only_layerscope_errors(Profile.from_json, raw)


@pytest.mark.parametrize("raw", ["[" * 100_000 + "]" * 100_000, '{"version": 1, "specs": ' + "[" * 5000 + "]" * 5000 + "}",
                                 '{"version": ' + "9" * 5000 + "}", '{"version": 1, "specs": [{"select": "top:' + "9" * 5000
                                 + '", "technique": "cast"}]}', b"\xff\xfe\x00{", '{"version": NaN}'])
def test_nesting_huge_integers_and_bad_encodings(tiny_profile, raw):
    for load in (CompressionPlan.from_json, HardwareProfile.from_json, Profile.from_json):
        with pytest.raises(LayerScopeError):
            plan = load(raw)
            if isinstance(plan, CompressionPlan):
                resolve_plan(plan, tiny_profile)


hardware_docs = st.fixed_dictionaries(
    {"name": st.text(max_size=10) | json_values,
     "peak_gflops": st.dictionaries(st.sampled_from(["float32", "bfloat16", "int4", ""]), scalars, max_size=3) | json_values,
     "bandwidth_gbs": scalars, "source": st.text(max_size=10) | json_values},
    optional={"kind": st.sampled_from(["measured", "datasheet", "guess"]) | json_values, "device": scalars,
              "details": json_values, "notes": json_values, "measured_at": scalars})


@FUZZ
@given(doc=hardware_docs)
def test_fuzzed_hardware_profiles(doc):
    import math

    hw = _only_layerscope_errors(HardwareProfile.from_json, json.dumps(doc))
    if hw is not None:  # whatever loads is physics: finite, positive roofs
        assert hw.peak_gflops and all(math.isfinite(v) and v > 0 for v in hw.peak_gflops.values())
        assert math.isfinite(hw.bandwidth_gbs) and hw.bandwidth_gbs > 0
        assert math.isfinite(hw.ridge_point())


def _mutate(data, draw):
    """Replace or delete one node somewhere in a JSON tree (a copy)."""
    root = json.loads(json.dumps(data))
    node = root
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return root
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and draw(st.integers(0, 3)) == 0:
            del node[key]
        else:
            node[key] = draw(json_values | st.sampled_from([-1, 0, 1e308, "conv1", "nope", [], {}]))
        return root


def _use_every_view(p: Profile) -> None:
    p.rows()
    p.ranked(5)
    p.bound_counts()
    p.to_csv()
    assert isinstance(p.unknown_layers, list)
    for path in p.graph.module_paths():
        p.module_totals(path)
    for depth in (None, 1, 2):
        mapping, edges = p.graph.collapsed(depth)
        p.graph.dag_layout(sorted(set(mapping.values())), edges)
    for row in p.rows():
        p.row(row.layer.id)
    p.hardware.ridge_point(p.model.compute_dtype)


@FUZZ
@given(data=st.data())
def test_fuzzed_saved_profiles_load_cleanly_or_not_at_all(tiny_profile, data):
    base = json.loads(tiny_profile.to_json())
    doc = base
    for _ in range(data.draw(st.integers(1, 3))):
        doc = _mutate(doc, data.draw)
    p = _only_layerscope_errors(Profile.from_json, json.dumps(doc))
    if p is not None:
        _use_every_view(p)


def test_inconsistent_profiles_are_refused(tiny_profile):
    base = json.loads(tiny_profile.to_json())
    lid = base["graph"]["layers"][0]["id"]

    def broken(edit):
        doc = json.loads(json.dumps(base))
        edit(doc)
        with pytest.raises(LayerScopeError, match="not a consistent"):
            Profile.from_json(json.dumps(doc))

    broken(lambda d: d["metrics"].pop(lid))  # an overlay lacks a layer
    broken(lambda d: d["roofline"].update({"ghost": d["roofline"][lid]}))  # an overlay names an unknown layer
    broken(lambda d: d["timings"][lid].update(latency_ms=-1.0))
    broken(lambda d: d["summary"].update(sum_of_layer_medians_ms=d["summary"]["sum_of_layer_medians_ms"] * 3))  # shares
    broken(lambda d: d["graph"]["edges"].append([d["graph"]["layers"][-1]["id"], lid]))  # a cycle
    broken(lambda d: d["graph"].update(output_layers=["ghost"]))
