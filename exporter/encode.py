"""A lean Prometheus text-format (0.0.4) encoder for the exporter's own metric families.

prometheus_client's generate_latest validates and escapes every metric and label name on every scrape; the
exporter's names are fixed and valid, so this writes the same bytes (a test compares them) in about half the time.
"""

from __future__ import annotations

from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary", "unknown": "untyped"}


def _label_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _sample(sample) -> str:
    if sample.labels:
        labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(sample.labels.items()))
        return f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}\n"
    return f"{sample.name} {floatToGoString(sample.value)}\n"


def encode(registry) -> bytes:
    """The registry's families in the text format; falls back to prometheus_client for types it writes specially."""
    out: list[str] = []
    for family in registry.collect():
        kind = _TYPES.get(family.type)
        if kind is None:  # info, stateset, gaugehistogram: never produced here, but stay correct
            from prometheus_client.exposition import generate_latest

            return generate_latest(registry)
        name = family.name + "_total" if family.type == "counter" else family.name
        doc = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
        out.extend(_sample(s) for s in family.samples if not s.name.endswith("_created"))
    return "".join(out).encode()
