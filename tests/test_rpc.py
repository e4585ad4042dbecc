"""Tuning over TVM RPC for real, on loopback: a tracker, two RPC servers (this machine standing in for
two boards), MetaSchedule's RPC runner measuring candidates built here."""
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from gconvgen import tunelog
from gconvgen.schedule import schedule
from gconvgen.spec import KernelSpec
from gconvgen.tune import Remote, tune

from helpers import relative_error

SPEC = KernelSpec(op="conv2d", batch=1, in_channels=8, out_channels=8, height=12, width=12, kernel=(3, 3),
                  padding=(1, 1, 1, 1), groups=8, epilogue=("relu",))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    logs = tmp_path_factory.mktemp("rpc")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                               str(port), "--port-end", str(port + 1)],
                              stdout=open(logs / "tracker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)]
    servers = []
    try:
        for i in range(2):
            server_port = _free_port()
            servers.append(logs / f"server{i}.log")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key", "loopback",
                 "--host", "127.0.0.1", "--port", str(server_port), "--port-end", str(server_port + 1)],
                stdout=open(servers[-1], "w"), stderr=subprocess.STDOUT, start_new_session=True))
        remote = Remote("127.0.0.1", port, "loopback")
        deadline = time.monotonic() + 120
        while True:   # the servers import TVM (seconds) before they register
            try:
                if remote.check() == 2:
                    break
            except RuntimeError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the loopback tracker and servers did not come up in 2 minutes")
            time.sleep(1)
        yield remote, servers
    finally:   # whole process groups: a server runs each session in a worker process of its own
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)


def test_tune_over_rpc_on_loopback(tracker, host, tmp_path):
    remote, server_logs = tracker
    profile = dataclasses.replace(host, logs=(str(tmp_path / "log"),))
    tasks = tune([SPEC], profile, trials=4, progress=False, remote=remote)
    task = tasks[0]
    assert task.trials >= 1 and task.best_us < float("inf")
    records = tunelog.TuneLog(profile.log_dirs[0]).records()
    assert len(records) == 1 + task.trials                       # the rule's seed, then the search
    assert schedule(SPEC, profile).kind == "tuned" and relative_error(SPEC, profile) < 1e-4
    loaded = sum(log.read_text().count("load_module") for log in server_logs)
    assert loaded >= len(records)                                # every candidate ran on a server


def test_rpc_errors_are_clear(tracker):
    remote, _ = tracker
    with pytest.raises(RuntimeError, match="no RPC server with key 'nokey'"):
        Remote(remote.host, remote.port, "nokey").check()
    with pytest.raises(RuntimeError, match="cannot reach the RPC tracker"):
        Remote("127.0.0.1", _free_port(), "x").check()
    with pytest.raises(ValueError, match="HOST:PORT"):
        Remote.parse("nohost", "k")
