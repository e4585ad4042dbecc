"""Layer suites: a JSON file of workload rows, or a built-in name: subsets of the public suite, or
`untuned` (layers of other models, which the shipped tuning log has never seen)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .paths import SUITES_DIR
from .spec import KernelSpec

# Built-in names -> prefixes of the `model` field of rows in suites/public.json.
BUILTIN = {
    "public": None,
    "mobilenet_v2": ("mobilenet_v2",),
    "shufflenet": ("shufflenet",),
    "shufflenet_v1": ("shufflenet_v1",),
    "shufflenet_v2": ("shufflenet_v2",),
    "resnext50": ("resnext50",),
    "convnext": ("convnext",),
}


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    spec: KernelSpec


def load(suite: str, layout: str | None = None, batch: int | None = None) -> list[Workload]:
    """Rows of a suite file or built-in suite; `layout` and `batch` override each row's."""
    path = Path(suite)
    models = None
    if not path.exists():
        if (SUITES_DIR / f"{suite}.json").exists():
            path = SUITES_DIR / f"{suite}.json"
        elif suite in BUILTIN:
            path, models = SUITES_DIR / "public.json", BUILTIN[suite]
        else:
            raise ValueError(f"suite {suite!r} is neither a file nor a built-in suite "
                             f"({', '.join([*BUILTIN, 'untuned'])})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"suite file {path} is not valid JSON: {e}") from e
    rows = data.get("workloads") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ValueError(f"suite file {path} must hold a list of rows or {{'workloads': [...]}}")
    out = []
    for i, row in enumerate(rows):
        model = row.get("model", "")
        if models and not model.startswith(models):
            continue
        if layout:
            row = dict(row, layout=layout)
        if batch is not None:
            row = dict(row, batch=batch)
        try:
            spec = KernelSpec.from_json(row)
        except ValueError as e:
            raise ValueError(f"{path}, row {i} ({row.get('name', '?')}): {e}") from e
        out.append(Workload(row.get("name", f"row{i}"), model, spec))
    if not out:
        raise ValueError(f"suite {suite!r} has no rows")
    return out
