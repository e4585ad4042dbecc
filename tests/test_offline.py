"""Tuning a machine this one cannot reach: candidates exported, measured by the shipped script (here,
on this CPU, standing in for the remote machine), the timings imported into the tuning log."""
import dataclasses
import json
import shutil
import subprocess
import sys

import pytest

from gconvgen import cli, offline, targets, tunelog
from gconvgen.schedule import schedule
from gconvgen.spec import KernelSpec

from helpers import relative_error

SPECS = [KernelSpec.from_json({"op": "conv2d", "in_channels": 8, "out_channels": 8, "height": 12, "width": 12,
                               "kernel": 3, "padding": 1, "groups": 8, "epilogue": ["relu"]}),
         KernelSpec.from_json({"op": "conv2d", "in_channels": 8, "out_channels": 16, "height": 12, "width": 12,
                               "epilogue": ["bias"]})]


@pytest.fixture(scope="module")
def exported(host, tmp_path_factory):
    profile = dataclasses.replace(host, logs=(str(tmp_path_factory.mktemp("log")),))
    return profile, offline.export(SPECS, profile, tmp_path_factory.mktemp("cands") / "c", trials=3)


@pytest.fixture(scope="module")
def exported_avx512(tmp_path_factory):
    """An export for AVX-512, whatever this host is (its candidates are compiled, not run): the tilings
    of a rule follow the vector width (with AVX2's 8 lanes 12 columns take DepthwiseNCHW's whole-row
    bands, 16 its plain tiles), so a test of how points carry between shapes fixes it."""
    profile = dataclasses.replace(targets.load("x86-avx512"), logs=(str(tmp_path_factory.mktemp("log")),))
    return profile, offline.export(SPECS, profile, tmp_path_factory.mktemp("cands") / "c", trials=3)


def test_export_measure_import(exported):
    profile, folder = exported
    data = json.loads((folder / offline.CANDIDATES).read_text())
    per_key = {spec.key: [c["rule"] for c in data["candidates"] if c["key"] == spec.key] for spec in SPECS}
    # each kernel: its rule's schedule and 2 drawn from its space, then the later rules that apply too
    # (the dense 1x1 also fits the x86 grouped/dense rule), each schedule offered once
    assert per_key[SPECS[0].key] == ["x86.DepthwiseNCHW"] * 3
    assert per_key[SPECS[1].key][:3] == ["x86.PointwiseNCHW"] * 3 and len(per_key[SPECS[1].key]) == 4
    assert data["device"] == "cpu" and all(c["function"].startswith("c") for c in data["candidates"])
    done = subprocess.run([sys.executable, folder / "loader" / "measure.py", folder], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((folder / offline.RESULTS).read_text())
    assert len(results) == 7 and all(samples and min(samples) > 0 for samples in results.values())
    counts = offline.import_results(folder, profile)
    assert sorted(counts.values()) == [3, 4]
    assert len(tunelog.TuneLog(profile.log_dirs[0]).records()) == 7
    for spec in SPECS:
        assert schedule(spec, profile).kind == "tuned"
        assert relative_error(spec, profile) < 1e-4


def test_a_second_round_searches_from_the_first_rounds_timings(exported, tmp_path):
    """Rounds of export, measure and import tune: after an import, the space of the rule that ran a
    kernel fastest gets the trials, and no point already timed is offered again (a rule's own
    schedule aside: measure.py's reference)."""
    profile, folder = exported
    profile = dataclasses.replace(profile, logs=(str(tmp_path / "log"),))
    copy = tmp_path / "c"
    shutil.copytree(folder, copy)
    entries = json.loads((copy / offline.CANDIDATES).read_text())["candidates"]
    # as measure.py writes them, the 1x1's alternative (the x86 grouped/dense rule) the fastest
    alternative = next(e for e in entries if e["key"] == SPECS[1].key and e["rule"] != "x86.PointwiseNCHW")
    results = {e["function"]: [2e-3, 2e-3] for e in entries}
    results[alternative["function"]] = [1e-3, 1e-3]
    (copy / offline.RESULTS).write_text(json.dumps(results))
    offline.import_results(copy, profile)
    second = offline.export(SPECS, profile, tmp_path / "second", trials=3, alternative_trials=2)
    data = json.loads((second / offline.CANDIDATES).read_text())
    rules = [c["rule"] for c in data["candidates"] if c["key"] == SPECS[1].key]
    assert rules == [alternative["rule"]] * 3 + ["x86.PointwiseNCHW"] * 2
    timed = {offline._point(r.trace) for r in tunelog.TuneLog(profile.log_dirs[0]).records()}
    traces = offline.records(second)["records"]
    firsts = {next(c["function"] for c in data["candidates"] if (c["key"], c["rule"]) == kr)
              for kr in {(c["key"], c["rule"]) for c in data["candidates"]}}
    drawn = [traces[c["function"]][0] for c in data["candidates"] if c["function"] not in firsts]
    assert len(drawn) == 5 and not {offline._point(t) for t in drawn} & timed


def test_an_export_offers_the_nearest_timed_kernels_fastest_point_fitted(exported_avx512, tmp_path):
    """A kernel's own search may never draw the tiling that ran a kernel like it fastest (MobileNetV2's
    576x14 depthwise on an H200: 34 us at best in 26 candidates, where 384x14 ran at 13 with a tiling
    none of them took), so an export also offers the nearest timed kernels' fastest points, fitted
    to the kernel's shape: each tile keeps its inner factors where they still divide, the outer one
    takes the rest. Marked with the kernel it came from; a kernel of another family gives none."""
    profile, folder = exported_avx512
    profile = dataclasses.replace(profile, logs=(str(tmp_path / "log"),))
    copy = tmp_path / "c"
    shutil.copytree(folder, copy)
    entries = json.loads((copy / offline.CANDIDATES).read_text())["candidates"]
    results = {e["function"]: [2e-3, 2e-3] for e in entries}
    fastest = [e for e in entries if e["key"] == SPECS[0].key][-1]   # a point of its search
    results[fastest["function"]] = [1e-3, 1e-3]
    (copy / offline.RESULTS).write_text(json.dumps(results))
    offline.import_results(copy, profile)
    wider = dataclasses.replace(SPECS[0], in_channels=24, out_channels=24, groups=24, height=16, width=16)
    out = offline.export([wider], profile, tmp_path / "n", trials=1)
    data = json.loads((out / offline.CANDIDATES).read_text())["candidates"]
    fitted = [c for c in data if "transfer_from" in c]
    assert [(c["transfer_from"], c["rule"]) for c in fitted] == [(SPECS[0].key, fastest["rule"])]
    point = json.loads(offline._point(offline.records(out)["records"][fitted[0]["function"]][0]))
    timed = json.loads(offline._point(offline.records(copy)["records"][fastest["function"]][0]))
    # (the tiles of 8 channels and 12 rows, on 24 and 16: inner factors kept where they divide)
    assert len(point) == len(timed) and point != timed
    for theirs, ours in zip(timed, point):
        assert all(b == a or not 48 % a for a, b in zip(theirs[1:], ours[1:]))
    own = [offline._point(offline.records(out)["records"][c["function"]][0]) for c in data if c not in fitted]
    assert json.dumps(point) not in own
    # (the other kernel timed, the dense 1x1, is of another family: nothing of it is offered)
    offline.export([SPECS[1]], profile, tmp_path / "d", trials=1)
    assert not any("transfer_from" in c for c in json.loads((tmp_path / "d" / offline.CANDIDATES).read_text())["candidates"])


def test_a_searched_point_is_known_as_a_point_of_its_rules_space():
    """MetaSchedule simplifies a searched point's trace (the lookups whose results go unused dropped,
    the rest numbered anew), so it differs from its rule's own schedule's in more than decisions:
    still, the point is known as one of that rule's space, and its decisions for what they are."""
    profile = targets.load("cuda-sm90")
    spec = KernelSpec.from_json({"op": "conv2d", "batch": 5, "in_channels": 64, "out_channels": 64, "height": 8,
                                 "width": 8, "groups": 4, "kernel": 3, "padding": 1, "dtype": "float16"})
    _, drawn = offline._draw(spec, profile, 1, seed=1, alternative_count=3)
    points = [(d.sch, tunelog.trace_json(d.sch.trace)) for d in drawn if d.rule == "cuda.TensorCoreGemm"]
    other = next(d.sch for d in drawn if d.rule == "cuda.GroupConvStagedNCHW")
    (own, own_trace), (_, searched) = points[0], points[1]
    assert len(searched[0]) != len(own_trace[0]) and len(searched[1]) == len(own_trace[1])
    record = tunelog.Record("w", searched, [1e-5], None, None)
    assert offline._holds(own, record) and not offline._holds(other, record)
    assert offline._point(searched) != offline._point(own_trace)


def test_a_rule_space_that_fails_to_sample_costs_its_points_not_the_export():
    """A space whose sampled points TVM refuses (here the padding's copy bound to the threads with the
    default's count, the conv's with the sampled one) is searched in vain: a warning, the rule's own
    schedule alone, and the export goes on."""
    import tvm
    from gconvgen.ops import prim_func
    from schedules import ScheduleRule
    from schedules.common import tile_factors

    class Mismatched(ScheduleRule):
        name = "cuda.Mismatched"

        def applies(self, spec, target):
            return True

        def schedule(self, sch, spec, target, tunable):
            pad, conv, out = sch.get_sblock("pad"), sch.get_sblock("conv"), sch.get_sblock("out")
            loop = sch.fuse(*sch.get_loops(out))
            block, thread = sch.split(loop, factors=tile_factors(sch, loop, 64, tunable, max_inner=256))
            sch.bind(block, "blockIdx.x")
            sch.bind(thread, "threadIdx.x")
            sch.compute_at(conv, block)
            sch.compute_at(pad, block)
            _, threads = sch.split(sch.fuse(*sch.get_loops(pad)[1:]), factors=[None, 64])
            sch.bind(threads, "threadIdx.x")

    profile = targets.load("cuda-sm90")
    target = profile.tvm_target()
    spec = SPECS[0]
    mod = tvm.IRModule({"main": prim_func(spec)})
    rule = Mismatched()
    own = rule.apply(mod["main"], target, tunable=True)
    with pytest.warns(UserWarning, match="the search of cuda.Mismatched's space .* failed"):
        points = offline._explore(spec, mod, rule, own, target, 4, 0, [], None)
    assert len(points) == 1 and points[0][0] is own


def test_measure_refuses_a_candidate_that_computes_something_else(host, tmp_path):
    # the kernel without its relu, listed as a candidate of the kernel with it
    other = dataclasses.replace(SPECS[0], epilogue=())
    folder = offline.export([SPECS[0], other], host, tmp_path / "c", trials=1)
    data = json.loads((folder / offline.CANDIDATES).read_text())
    data["candidates"][1]["key"] = SPECS[0].key
    (folder / offline.CANDIDATES).write_text(json.dumps(data))
    done = subprocess.run([sys.executable, folder / "loader" / "measure.py", folder], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "differs from the rule's schedule" in done.stdout
    results = json.loads((folder / offline.RESULTS).read_text())
    assert results[data["candidates"][0]["function"]] and results[data["candidates"][1]["function"]] == []


def test_measure_resumes_after_the_candidate_a_run_died_in(exported, tmp_path):
    # as a GPU run leaves it when a candidate faults: the rule's schedule timed, the next one running
    _, folder = exported
    copy = tmp_path / "c"
    shutil.copytree(folder, copy)
    functions = [c["function"] for c in json.loads((copy / offline.CANDIDATES).read_text())["candidates"]]
    (copy / offline.RESULTS).write_text(json.dumps({functions[0]: [1.0]}))
    (copy / "measuring.json").write_text(json.dumps({"function": functions[1]}))
    done = subprocess.run([sys.executable, copy / "loader" / "measure.py", copy, "--resume"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{functions[1]} failed: the last run died in it" in done.stdout
    results = json.loads((copy / offline.RESULTS).read_text())
    # kept, failed, and the rest measured: checked against the rule's schedule, which ran again for it
    assert results[functions[0]] == [1.0] and results[functions[1]] == []
    assert all(results[f] and min(results[f]) > 0 for f in functions[2:]) and len(results) == len(functions)
    assert not (copy / "measuring.json").exists()


def _gpu_check(bundle_dir, candidates, journal) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, bundle_dir / "loader" / "gpu_check.py", bundle_dir, "--device", "cpu",
                           "--json", journal, "--candidates", candidates], capture_output=True, text=True, timeout=300)


def test_gpu_check_times_each_kernels_fastest_candidate(exported, host, tmp_path):
    """One GPU run shows what importing its timings would serve: gpu_check.py --candidates checks and
    times each kernel's fastest timed candidate beside the bundle's kernel (here on this CPU)."""
    from gconvgen import bundle
    _, folder = exported
    copy = tmp_path / "c"
    shutil.copytree(folder, copy)
    entries = json.loads((copy / offline.CANDIDATES).read_text())["candidates"]
    first = [e["function"] for e in entries if e["key"] == SPECS[0].key]
    # as measure.py writes them: the depthwise's second candidate its fastest, the 1x1's all failed
    results = {e["function"]: [] if e["key"] == SPECS[1].key else [1.0] for e in entries}
    results[first[1]] = [0.5, 0.4, 0.6]
    (copy / offline.RESULTS).write_text(json.dumps(results))
    out = bundle.make(SPECS, host, tmp_path / "b")
    done = _gpu_check(out, copy, tmp_path / "r.json")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["key"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    depthwise, pointwise = rows[SPECS[0].key], rows[SPECS[1].key]
    assert depthwise["candidate"] == first[1] and depthwise["candidate_ok"] and depthwise["candidate_us"] > 0
    assert depthwise["tuned_speedup"] >= depthwise["speedup"] and "candidate" not in pointwise
    assert pointwise["tuned_speedup"] == pointwise["speedup"]   # its own kernel: no candidate was timed
    assert "with the fastest timed candidates, float32 batch 1: " in done.stdout


def test_gpu_check_flags_a_fastest_candidate_that_differs_from_torch(host, tmp_path):
    from gconvgen import bundle
    other = dataclasses.replace(SPECS[0], epilogue=())   # without its relu, listed as the kernel's candidate
    folder = offline.export([SPECS[0], other], host, tmp_path / "c", trials=1)
    data = json.loads((folder / offline.CANDIDATES).read_text())
    data["candidates"][1]["key"] = SPECS[0].key
    (folder / offline.CANDIDATES).write_text(json.dumps(data))
    (folder / offline.RESULTS).write_text(json.dumps({data["candidates"][0]["function"]: [1.0],
                                                      data["candidates"][1]["function"]: [0.5]}))
    out = bundle.make(SPECS[:1], host, tmp_path / "b")
    done = _gpu_check(out, folder, tmp_path / "r.json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DIFFERS from torch" in done.stdout and "1 fastest candidate(s) differ from torch" in done.stdout
    assert "1 of 1 kernels match torch" in done.stdout


def test_import_refuses_other_targets_and_missing_results(exported, tmp_path):
    profile, folder = exported
    copy = tmp_path / "c"
    shutil.copytree(folder, copy)
    (copy / offline.RESULTS).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="measure.py"):
        offline.import_results(copy, profile)
    (copy / offline.RESULTS).write_text("{}")
    with pytest.raises(ValueError, match="not 'arm-cortex-a72'"):
        offline.import_results(copy, targets.load("arm-cortex-a72"))
    (copy / offline.RECORDS).write_bytes(b"\x1f\x8b damaged")   # the records import reads, not carried
    with pytest.raises(ValueError, match="records.json.gz is missing or corrupt"):
        offline.import_results(copy, profile)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs the CUDA toolkit (nvcc)")
def test_cuda_candidates_carry_fatbins(tmp_path):
    from gconvgen.cuda import has_fatbin
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"version": 1, "workloads": [{"name": "dw", **SPECS[0].to_json()}]}))
    assert cli.main(["tune", "--target", "cuda-sm90", "--suite", str(suite), "--trials", "2",
                     "--alternative-trials", "2", "--neighbor-trials", "0", "--export-candidates", str(tmp_path / "h100")]) == 0
    data = json.loads((tmp_path / "h100" / offline.CANDIDATES).read_text())
    # 2 of the space of the depthwise rule that serves a 3x3 on a 12x12 plane (the staged columns),
    # and 2 of each other's
    assert data["device"] == "cuda" and [c["rule"] for c in data["candidates"]] == [
        "cuda.DepthwiseColumnsStagedNCHW", "cuda.DepthwiseColumnsStagedNCHW", "cuda.DepthwiseStagedNCHW",
        "cuda.DepthwiseStagedNCHW", "cuda.DepthwiseColumnsNCHW", "cuda.DepthwiseColumnsNCHW", "cuda.DepthwiseNCHW",
        "cuda.DepthwiseNCHW", "cuda.DepthwisePlanesNCHW", "cuda.DepthwisePlanesNCHW",
        "cuda.DepthwiseColumnsRegistersNCHW", "cuda.DepthwiseColumnsRegistersNCHW"]
    assert len({json.dumps(r) for r in offline.records(tmp_path / "h100")["records"].values()}) == 12
    assert has_fatbin(tmp_path / "h100" / offline.LIBRARY)
    assert (tmp_path / "h100" / "lib" / "libtvm_runtime_cuda.so").exists()
    assert (tmp_path / "h100" / "loader" / "gpu_check.py").exists()   # (measure.py's GPU timer)
