import json
import subprocess
import sys


def gconvgen(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "gconvgen.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_bench_prints_table_and_json(tmp_path):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"workloads": [
        {"name": "dw", "op": "conv2d", "in_channels": 16, "out_channels": 16, "height": 14, "width": 14,
         "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 16,
         "epilogue": ["bias", "relu6"]},
        {"name": "shuffle", "op": "channel_shuffle", "channels": 12, "height": 7, "width": 7, "groups": 3}]}))
    out = tmp_path / "bench.json"
    result = gconvgen("bench", "--suite", str(suite), "--threads", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "geomean" in result.stdout and "depthwise" in result.stdout
    data = json.loads(out.read_text())
    assert data["target"] == "host" and data["threads"] == 1 and data["torch"] and data["tvm"]
    assert [r["name"] for r in data["rows"]] == ["dw", "shuffle"]
    for row in data["rows"]:
        assert set(row) >= {"name", "op_class", "layout", "ours_us", "torch_us", "torch_best_us",
                            "torch_compile_us", "max_abs_err", "schedule"}
        assert row["ours_us"] > 0 and row["torch_best_us"] <= row["torch_us"]
        assert row["max_abs_err"] < 1e-4 and row["schedule"] in ("tuned", "transfer", "rule", "fallback")
    # the roofline: the longer of torch copying the kernel's bytes and its multiply-adds at torch's GEMM rate
    dw, shuffle = data["rows"]
    assert dw["copy_us"] > 0 and dw["fma_us"] > 0 and dw["roofline_us"] == max(dw["copy_us"], dw["fma_us"])
    assert shuffle["fma_us"] is None and shuffle["roofline_us"] == shuffle["copy_us"] > 0
    assert "roofline" in result.stdout and "% of the roofline" in result.stdout
    again = gconvgen("bench", "--suite", str(suite), "--threads", "1")
    assert again.returncode == 0 and "cached" in again.stderr
    batched = gconvgen("bench", "--suite", str(suite), "--threads", "1", "--batch", "3", "--json", str(out))
    assert batched.returncode == 0, batched.stderr
    assert all("_n3_" in r["key"] for r in json.loads(out.read_text())["rows"])


def test_bad_input_gives_a_clear_error(tmp_path):
    suite = tmp_path / "bad.json"
    suite.write_text(json.dumps([{"op": "conv2d", "in_channels": 10, "out_channels": 10, "height": 8,
                                  "width": 8, "groups": 3}]))
    result = gconvgen("bench", "--suite", str(suite))
    assert result.returncode == 2
    assert "groups=3 does not divide in_channels=10" in result.stderr
    result = gconvgen("bench", "--target", "no-such-board")
    assert result.returncode == 2 and "unknown target profile" in result.stderr


def test_build_and_info(tmp_path):
    result = gconvgen("build", "--suite", "shufflenet_v2", "-o", str(tmp_path / "lib"))
    assert result.returncode == 0, result.stderr
    info = gconvgen("info", str(tmp_path / "lib"))
    assert info.returncode == 0 and "channel_shuffle" in info.stdout


def test_gpu_builds_take_float32_gemms_also_in_tf32():
    """On a GPU target the rows of tune, build and bench are the kernels the torch ops run: a float32
    conv that tensor cores serve in TF32 also as its TF32 kernel (a row NAME.tf32), which the ops run
    while torch allows TF32; none with --no-tf32, none in float16, none on a CPU target."""
    import argparse
    from gconvgen import cli, targets
    args = dict(suite="public", layout="NHWC", batches="64", dtypes="float32,float16", model=None)
    rows = cli._workloads(argparse.Namespace(**args, tf32=True), targets.load("cuda-sm90"))
    tf32 = [r for r in rows if r.spec.tf32]
    assert tf32 and all(r.name.endswith(".tf32") and r.spec.dtype == "float32" for r in tf32)
    assert {r.spec.key for r in tf32} <= {r.spec.key + "_tf32" for r in rows if r.spec.dtype == "float32"}
    assert "mbv2.pw960to320x7.tf32" in {r.name for r in tf32}
    assert not any(r.spec.tf32 for r in cli._workloads(argparse.Namespace(**args, tf32=False), targets.load("cuda-sm90")))
    assert not any(r.spec.tf32 for r in cli._workloads(argparse.Namespace(**args, tf32=True), targets.load("host")))
