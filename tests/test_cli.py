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
