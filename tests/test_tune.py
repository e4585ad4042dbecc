"""Tuning end to end (real MetaSchedule, real builder and runner), the log's safety, transfer."""
import dataclasses
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from gconvgen import reference, tunelog
from gconvgen.convergence import trials_to_fraction
from gconvgen.ops import prim_func
from gconvgen.schedule import distance, schedule
from gconvgen.spec import KernelSpec
from gconvgen.tune import tune

from helpers import relative_error

DW = KernelSpec(op="conv2d", batch=1, in_channels=16, out_channels=16, height=14, width=14, kernel=(3, 3),
                stride=(1, 1), padding=(1, 1, 1, 1), groups=16, epilogue=("bias", "relu6"))
PW = KernelSpec(op="conv2d", batch=1, in_channels=16, out_channels=32, height=14, width=14, kernel=(1, 1),
                groups=1, epilogue=("bias", "relu"))


def _with_log(profile, folder):
    return dataclasses.replace(profile, logs=(str(folder),))


def _workload(spec):
    import tvm
    return tunelog.workload_of(tvm.IRModule({"main": prim_func(spec)}))


@pytest.fixture(scope="module")
def tuned(host, tmp_path_factory):
    """Two small kernels tuned for 4 trials each into a fresh log."""
    profile = _with_log(host, tmp_path_factory.mktemp("log"))
    tasks = tune([DW, PW, DW], profile, trials=4, progress=False)
    return profile, tasks


def test_tune_writes_records_and_tuned_kernels_are_right(tuned):
    profile, tasks = tuned
    assert [t.spec.key for t in tasks] == [DW.key, PW.key]
    assert [t.weight for t in tasks] == [2, 1]
    log = tunelog.TuneLog(profile.log_dirs[0])
    for task in tasks:
        assert task.trials >= 1 and task.best_us < float("inf")
        records = [r for r in log.records() if r.workload == task.workload[0]]
        assert len(records) == 1 + task.trials          # the rule's seed, then the search
        assert schedule(task.spec, profile).kind == "tuned"
        assert relative_error(task.spec, profile) < 1e-4
    # The folder is a MetaSchedule JSON database that MetaSchedule itself reads.
    from tvm.s_tir import meta_schedule as ms
    db = ms.database.JSONDatabase(work_dir=str(profile.log_dirs[0]))
    assert len(db) == len(log.records())


def test_resume_adds_records_without_duplicates(tuned):
    profile, tasks = tuned
    log = tunelog.TuneLog(profile.log_dirs[0])
    before = len(log.records())
    again = tune([DW], profile, trials=2, progress=False)
    assert len(log.records()) == before + again[0].trials   # no second seed for a known kernel
    assert len(log.workloads()) == 2                          # the workload line is not repeated
    assert again[0].first_us < float("inf")                  # resumed from the log's best


def test_truncated_log_is_recovered(tuned, tmp_path):
    profile, _ = tuned
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in (tunelog.WORKLOADS, tunelog.RECORDS):
        (folder / name).write_bytes((profile.log_dirs[0] / name).read_bytes())
    good = len(tunelog.TuneLog(folder).records())
    text = (folder / tunelog.RECORDS).read_bytes()
    last = text.rstrip(b"\n").rsplit(b"\n", 1)[1]
    (folder / tunelog.RECORDS).write_bytes(text + last[: len(last) // 2])   # a kill -9 mid-write
    with pytest.warns(UserWarning, match="unreadable line"):
        assert len(tunelog.TuneLog(folder).records()) == good
    log = tunelog.TuneLog(folder)
    record = json.loads(last)[1]
    with pytest.warns(UserWarning, match="truncated last line"):
        log.append(_workload(DW), [record])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(tunelog.TuneLog(folder).records()) == good + 1


def _append_many(folder: str, which: int, n: int) -> None:
    import tvm  # noqa: F401 - the child appends the way the tuner does
    spec = [DW, PW][which]
    log = tunelog.TuneLog(folder)
    trace = [[], []]
    for i in range(n):
        log.append(_workload(spec), [[trace, [1e-6 * (i + 1)], {"kind": "llvm"}, []]])


def test_two_processes_share_one_log(tmp_path):
    tests = Path(__file__).resolve().parent
    code = (f"import sys; sys.path.insert(0, {str(tests)!r}); from test_tune import _append_many; "
            f"_append_many({str(tmp_path)!r}, int(sys.argv[1]), 60)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], cwd=tests.parent) for i in (0, 1)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    log = tunelog.TuneLog(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # not one broken line
        records = log.records()
    assert len(log.workloads()) == 2
    for spec in (DW, PW):
        mine = [r for r in records if r.workload == _workload(spec)[0]]
        assert sorted(r.seconds for r in mine) == pytest.approx([1e-6 * (i + 1) for i in range(60)])


def test_transfer_to_a_new_shape_is_validated(tuned):
    profile, _ = tuned
    wider = dataclasses.replace(DW, in_channels=24, out_channels=24, groups=24, height=28, width=28)
    got = schedule(wider, profile)
    # Served only when it also beats the rule on a timed run; the source names both either way.
    assert got.kind in ("transfer", "rule") and DW.key in got.source and "beat" in got.source
    assert relative_error(wider, profile) < 1e-4


def test_a_transferred_tile_keeps_the_factors_that_still_divide():
    """A record replayed on another shape (a transfer, or an export's neighbor point) keeps each
    tile's inner factors where they divide the new loop and takes the nearest divisor where not;
    TVM's own replay of the record (TuningRecord.from_json) had made such a tile [1, extent] before
    our fitting saw it, so the tiling did not carry over. Scheduled for AVX-512 whatever this host
    is (nothing runs): with AVX2's 8 lanes 14 columns take DepthwiseNCHW's whole-row bands, one tile."""
    import tvm
    from gconvgen import targets
    from gconvgen.ops import prim_func
    from gconvgen.schedule import fit_tile, replay
    from gconvgen.tunelog import Record, trace_json
    from schedules import x86
    assert fit_tile(576, [128, 3], 64) == [192, 3] and fit_tile(232, [128, 3], 64) == [58, 4]
    assert fit_tile(7, [1, 7, 2], 8) == [1, 7, 1] and fit_tile(56, [2, 7, 2], 8) == [4, 7, 2]
    assert fit_tile(16, [1, 12], 16) == [1, 16] and fit_tile(16, [1, 12], 8) == [2, 8]
    target = targets.load("x86-avx512").tvm_target()
    sch = x86.DepthwiseNCHW().apply(prim_func(DW), target, tunable=True)
    record = Record("w", trace_json(sch.trace), [1e-5], None, None)
    assert [d for _, d in record.trace[1]] == [[2, 7], [1, 14]]   # (14x14: the rows' tile, the columns')
    other = dataclasses.replace(DW, height=20, width=20)
    replayed = replay(tvm.IRModule({"main": prim_func(other)}), record, adapt=True)
    assert [list(map(int, d)) for d in replayed.trace.decisions.values()] == [[4, 5], [2, 10]]


def test_transfer_that_unrolls_a_whole_channel_loop_is_skipped(host):
    # The shipped log's nearest record, replayed on 4096 output channels, unrolls all of them (LLVM then
    # compiled for over 5 minutes); the next candidate or the rule serves instead, at once.
    import time
    from tvm import s_tir
    from gconvgen.schedule import MAX_TRANSFER_UNROLL, _largest_unroll
    spec = KernelSpec(op="conv2d", batch=1, in_channels=4, out_channels=4096, height=28, width=28, epilogue=("relu6",))
    start = time.perf_counter()
    got = schedule(spec, host)
    assert time.perf_counter() - start < 120
    assert _largest_unroll(s_tir.Schedule(got.func)) <= MAX_TRANSFER_UNROLL
    assert relative_error(spec, host) < 1e-4


def test_fastest_takes_the_faster_kernel(host):
    from gconvgen.ops import prim_func
    from gconvgen.schedule import Scheduled, fastest, rule_schedule
    # a GEMM, whose loop nest as written runs 17-24x slower here: clear even while another test
    # worker takes a core (a depthwise layer's rule won by 2x at most there)
    spec = dataclasses.replace(PW, in_channels=128, out_channels=128, height=28, width=28)
    rule = rule_schedule(spec, host)
    naive = Scheduled(prim_func(spec).with_attr("global_symbol", spec.func_name), "fallback", "unscheduled")
    got = fastest(spec, host, [naive, rule])   # the loop nest as written: one thread, scalar, several x slower
    assert got.func.same_as(rule.func) and "beat fallback unscheduled" in got.source


def test_transfer_falls_back_to_the_rule_when_the_trace_does_not_apply(tuned):
    profile, _ = tuned
    # Same family, but no padding: the tuned trace schedules a "pad" block this kernel lacks.
    unpadded = dataclasses.replace(DW, padding=(0, 0, 0, 0), height=16, width=16)
    assert distance(unpadded, DW) is not None
    assert schedule(unpadded, profile).kind == "rule"
    assert relative_error(unpadded, profile) < 1e-4
    # Another family never takes a depthwise trace.
    assert distance(PW, DW) is None


def test_corrupt_log_warns_and_falls_back(host, tmp_path):
    (tmp_path / tunelog.WORKLOADS).write_bytes(b"\x00\xffnot json\n")
    (tmp_path / tunelog.RECORDS).write_text("[0, [garbage]]\n{}\n")
    profile = _with_log(host, tmp_path)
    with pytest.warns(UserWarning, match="unreadable"):
        got = schedule(DW, profile)
    assert got.kind == "rule"


def test_trials_to_fraction():
    assert trials_to_fraction([100.0, 80.0, 50.0, 60.0]) == 2
    assert trials_to_fraction([50.0, 45.0]) == 0
    assert trials_to_fraction([float("inf"), 10.0]) == 1
    assert trials_to_fraction([]) is None


def test_cli_tune_seed_only_then_bench_marks_rows(host, tmp_path, capsys):
    from gconvgen import cli
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps([dict(DW.to_json(), name="dw16"), dict(PW.to_json(), name="pw16")]))
    profile_file = tmp_path / "mine.toml"
    profile_file.write_text(f'name = "mine"\nfamily = "x86"\nlogs = ["{tmp_path / "log"}"]\n'
                            f'[target]\nkind = "llvm"\nmcpu = "{host.target["mcpu"]}"\nnum-cores = 2\n')
    assert cli.main(["tune", "--target", str(profile_file), "--suite", str(suite), "--trials", "0"]) == 0
    out = capsys.readouterr().out
    assert "dw16" in out and "pw16" in out
    assert cli.main(["bench", "--target", str(profile_file), "--suite", str(suite), "--convergence"]) == 0
    assert "trials to 90%" in capsys.readouterr().out
    png = tmp_path / "speed.png"
    assert cli.main(["bench", "--target", str(profile_file), "--suite", str(suite), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.count("tuned") >= 2          # both rows come from the log the tune run wrote
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensor_intrinsics_load_and_inspect_is_restored():
    """gconvgen.tensor_intrin imports TVM's intrinsics with a frame walk in place of inspect.stack
    (88 s -> 6 s here); afterwards the intrinsics are registered and inspect.stack is the stdlib's."""
    import inspect
    from gconvgen import tensor_intrin
    stack = inspect.stack
    tensor_intrin.load()
    assert inspect.stack is stack and inspect.stack()[0].function == "test_tensor_intrinsics_load_and_inspect_is_restored"
    from tvm.s_tir import TensorIntrin
    from tvm.s_tir.tensor_intrin.cuda import WMMA_SYNC_16x16x16_f16f16f32_INTRIN
    assert TensorIntrin.get(WMMA_SYNC_16x16x16_f16f16f32_INTRIN) is not None
