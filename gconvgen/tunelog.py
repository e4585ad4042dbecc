"""A target's tuning log: MetaSchedule's JSON database files, read tolerantly, appended safely.

The folder holds exactly what `ms.database.JSONDatabase(work_dir=...)` reads:
`database_workload.json` (one `[structural_hash, base64 module]` line per workload) and
`database_tuning_record.json` (one `[workload_index, [trace, run_secs, target, args_info]]` line
per measured candidate). We read and write the files ourselves because JSONDatabase
- aborts on a line a killed process left half-written, and
- numbers workloads by line, so two tuners appending to one database would cross the indices.
Here every append happens under an exclusive lock and resolves the workload index from the file
as it is then; each line goes out in one write() and a crashed writer's partial last line is cut
off before the next append. Nothing is ever rewritten, so nothing tuned is lost.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
FAILED = 1e10  # MetaSchedule's run time for a candidate that failed to build or run


@dataclass(frozen=True)
class Record:
    """One measured candidate, still in MetaSchedule's JSON form."""
    workload: str        # the workload's structural hash (MetaSchedule's key)
    trace: Any           # the schedule trace, JSON
    run_secs: list[float]
    target: Any
    args_info: Any

    @property
    def seconds(self) -> float:
        """Mean measured time; FAILED for a candidate that did not build or run."""
        return sum(self.run_secs) / len(self.run_secs) if self.run_secs else FAILED

    @property
    def ok(self) -> bool:
        return self.seconds < FAILED

    @property
    def tensorizes(self) -> bool:
        """Whether the trace tensorizes (names TVM's tensor intrinsics, registered only on import)."""
        return any(inst[0] == "Tensorize" for inst in self.trace[0])

    def as_json(self) -> list:
        return [self.trace, self.run_secs, self.target, self.args_info]


def workload_of(mod) -> list[str]:
    """MetaSchedule's `[structural_hash, base64 module]` for a module."""
    from tvm.s_tir import meta_schedule as ms
    return [str(x) for x in ms.database.Workload(mod).as_json()]


def _plain(obj: Any) -> Any:
    """tvm-ffi values -> plain JSON values (IntImm/FloatImm become numbers, IR nodes their JSON text)."""
    import tvm
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tvm.tirx.IntImm):
        return bool(obj.value) if str(obj.ty.dtype) == "bool" else int(obj.value)
    if isinstance(obj, tvm.tirx.FloatImm):
        return float(obj.value)
    if hasattr(obj, "items"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, tvm.runtime.Object) and not hasattr(obj, "__len__"):
        return tvm.ir.save_json(obj)
    return [_plain(x) for x in obj]


def trace_json(trace) -> list:
    """A schedule trace as the JSON a record line holds."""
    return _plain(trace.as_json(remove_postproc=False))


def record_json(tuning_record) -> list:
    """An ms.database.TuningRecord as the JSON a record line holds (without the workload index).
    MetaSchedule's own TuningRecord.as_json cannot convert traces that hold an IndexMap."""
    r = tuning_record
    return [trace_json(r.trace),
            [float(s) for s in r.run_secs] if r.run_secs is not None else None,
            _plain(r.target.export()), [_plain(a.as_json()) for a in r.args_info]]


class TuneLog:
    """The tuning log in one folder (tune_logs/<name>/). Reads are cached per file state."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._cache: dict[str, tuple[tuple[int, int], Any]] = {}
        self._fingerprint: tuple[list, str] | None = None

    # --- reading ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.folder / RECORDS).exists()

    def workloads(self) -> list[list[str] | None]:
        """Workload lines by index (None where a line is unreadable, so indices stay right)."""
        return self._read(WORKLOADS, lambda v: v if _is_workload(v) else None)

    def records(self) -> list[Record]:
        hashes = [w[0] if w else None for w in self.workloads()]
        out = []
        for line in self._read(RECORDS, lambda v: v if _is_record(v) else None):
            if line is None:
                continue
            idx, (trace, run_secs, target, args_info) = line
            if not 0 <= idx < len(hashes) or hashes[idx] is None:
                continue
            out.append(Record(hashes[idx], trace, [float(s) for s in run_secs or []], target, args_info))
        return out

    def records_for(self, workload_hash: str) -> list[Record]:
        """The workload's working records, fastest first."""
        return sorted((r for r in self.records() if r.workload == workload_hash and r.ok), key=lambda r: r.seconds)

    def fingerprint(self) -> str:
        """Changes whenever a record is added: part of the kernel cache key."""
        states = []
        for name in (WORKLOADS, RECORDS):
            try:
                st = (self.folder / name).stat()
                states.append((st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                states.append(None)
        if self._fingerprint and self._fingerprint[0] == states:
            return self._fingerprint[1]
        h = hashlib.sha256()
        for name in (WORKLOADS, RECORDS):
            path = self.folder / name
            h.update(path.read_bytes() if path.exists() else b"-")
        self._fingerprint = (states, h.hexdigest()[:16])
        return self._fingerprint[1]

    def _read(self, name: str, check) -> list:
        path = self.folder / name
        try:
            st = path.stat()
        except FileNotFoundError:
            return []
        state = (st.st_size, st.st_mtime_ns)
        hit = self._cache.get(name)
        if hit and hit[0] == state:
            return hit[1]
        lines, bad = [], []
        with open(path, "rb") as f:
            data = f.read()
        for number, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                value = check(json.loads(raw))
            except (ValueError, UnicodeDecodeError):
                value = None
            if value is None:
                bad.append(number)
            lines.append(value)
        if bad:
            warnings.warn(f"tuning log {path}: skipped {len(bad)} unreadable line(s) (first: line {bad[0]}); "
                          f"a tuner killed while writing leaves one such line, the rest of the log is used",
                          stacklevel=3)
        self._cache[name] = (state, lines)
        return lines

    # --- writing ---------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, workload: list[str], records: list[list]) -> None:
        """Add records (record_json form) of one workload; adds the workload line if it is new."""
        with self._locked():
            for name in (WORKLOADS, RECORDS):
                _cut_partial_line(self.folder / name)
            self._cache.clear()
            hashes = [w[0] if w else None for w in self.workloads()]
            if workload[0] in hashes:
                index = hashes.index(workload[0])
            else:
                index = len(hashes)
                _append_lines(self.folder / WORKLOADS, [workload])
            _append_lines(self.folder / RECORDS, [[index, r] for r in records])
            self._cache.clear()


def _is_workload(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)


def _is_record(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], list)
            and len(v[1]) == 4 and (v[1][1] is None or isinstance(v[1][1], list)))


def _cut_partial_line(path: Path) -> None:
    """Drop a last line without its newline: only a writer that died mid-line leaves one."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
    warnings.warn(f"tuning log {path}: dropped a truncated last line ({len(data) - keep} bytes) "
                  f"left by a tuner that was killed while writing", stacklevel=3)


def _append_lines(path: Path, values: list) -> None:
    if not values:
        return
    text = "".join(json.dumps(v, separators=(",", ":")) + "\n" for v in values).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)
