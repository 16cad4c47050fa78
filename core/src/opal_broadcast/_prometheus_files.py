"""Each worker's metrics as a file, and every live worker's files as one Prometheus page.

A worker's OpenTelemetry SDK exports its (cumulative) metrics every few seconds through
:class:`DirectoryExporter`: one JSON file per process, ``<directory>/<pid>.json``, replaced
atomically. :func:`render` reads the files of the workers still alive and writes the Prometheus
text exposition format, one series per worker (label ``worker``). The OpenTelemetry Prometheus
exporter documents no multiprocess support; this is how one scrape sees every uvicorn worker of
a container.

Names follow the OpenTelemetry-to-Prometheus rules: dots become underscores, a unit of seconds
adds ``_seconds``, counters end in ``_total``; histograms give ``_bucket``/``_sum``/``_count``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["live_snapshots", "make_exporter", "render"]

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}


def make_exporter(directory: Path, on_export: Any = None) -> Any:
    """An OpenTelemetry ``MetricExporter`` writing ``<directory>/<pid>.json`` at each export
    (the SDK is imported here: it is an optional dependency); ``on_export`` is called after."""
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        MetricExporter,
        MetricExportResult,
    )

    class _Exporter(MetricExporter):
        def __init__(self) -> None:
            super().__init__(preferred_temporality=None)  # cumulative, the SDK's default
            self.path = directory / f"{os.getpid()}.json"

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **_: Any) -> Any:
            families = list(_families(metrics_data, AggregationTemporality.CUMULATIVE))
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(families))
            os.replace(temporary, self.path)
            if on_export is not None:
                on_export()
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
            self.path.unlink(missing_ok=True)

    return _Exporter()


def _families(metrics_data: Any, cumulative: Any) -> Iterable[dict[str, Any]]:
    for resource in metrics_data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                family = _family(metric, cumulative)
                if family is not None:
                    yield family


def _family(metric: Any, cumulative: Any) -> dict[str, Any] | None:
    data = metric.data
    kind = type(data).__name__
    points: list[dict[str, Any]] = []
    if kind == "Histogram":
        for point in data.data_points:
            points.append(
                {
                    "labels": dict(point.attributes),
                    "bounds": list(point.explicit_bounds),
                    "counts": list(point.bucket_counts),
                    "sum": point.sum,
                    "count": point.count,
                }
            )
        prometheus_type = "histogram"
    elif kind in ("Sum", "Gauge"):
        monotonic = kind == "Sum" and data.is_monotonic
        if kind == "Sum" and data.aggregation_temporality != cumulative:
            return None  # a delta sum cannot be shown as a total
        for point in data.data_points:
            points.append({"labels": dict(point.attributes), "value": point.value})
        prometheus_type = "counter" if monotonic else "gauge"
    else:  # exponential histograms: not produced by opal-broadcast
        return None
    return {
        "name": metric.name,
        "unit": metric.unit or "",
        "description": metric.description or "",
        "type": prometheus_type,
        "points": points,
    }


def live_snapshots(directory: Path) -> list[tuple[int, list[dict[str, Any]]]]:
    """(pid, families) of every worker whose process is alive; the files of dead ones removed."""
    snapshots = []
    for path in sorted(directory.glob("*.json")):
        try:
            pid = int(path.stem)
        except ValueError:
            continue
        if not _alive(pid):
            path.unlink(missing_ok=True)
            continue
        try:
            snapshots.append((pid, json.loads(path.read_text())))
        except (OSError, ValueError):  # replaced while read: the next scrape has it
            continue
    return snapshots


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render(snapshots: Sequence[tuple[int, list[dict[str, Any]]]]) -> str:
    """The Prometheus text format of every worker's families, merged by metric name."""
    merged: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for pid, families in snapshots:
        for family in families:
            name = _metric_name(family)
            entry = merged.setdefault(name, (family, []))
            entry[1].extend(_samples(name, family, {"worker": str(pid)}))
    lines = []
    for name, (family, samples) in sorted(merged.items()):
        lines.append(f"# HELP {name} {_escape_help(family['description'])}")
        lines.append(f"# TYPE {name} {family['type']}")
        lines.extend(samples)
    return "\n".join(lines) + "\n"


def _metric_name(family: dict[str, Any]) -> str:
    name = _INVALID.sub("_", family["name"])
    unit = family["unit"]
    suffix = _UNITS.get(unit, "" if unit.startswith("{") else _INVALID.sub("_", unit))
    if suffix and not name.endswith(f"_{suffix}"):
        name = f"{name}_{suffix}"
    if family["type"] == "counter":
        name += "_total"  # the text format names a counter's family as its samples
    return name


def _samples(name: str, family: dict[str, Any], extra: dict[str, str]) -> Iterable[str]:
    for point in family["points"]:
        labels = {**{_INVALID.sub("_", k): str(v) for k, v in point["labels"].items()}, **extra}
        if family["type"] == "histogram":
            cumulative = 0
            for bound, count in zip([*point["bounds"], math.inf], point["counts"], strict=False):
                cumulative += count
                le = "+Inf" if math.isinf(bound) else _number(bound)
                yield f"{name}_bucket{_labels({**labels, 'le': le})} {cumulative}"
            yield f"{name}_sum{_labels(labels)} {_number(point['sum'])}"
            yield f"{name}_count{_labels(labels)} {point['count']}"
        else:
            yield f"{name}{_labels(labels)} {_number(point['value'])}"


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{key}="{_escape_label(value)}"' for key, value in sorted(labels.items()))
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return repr(float(value))
