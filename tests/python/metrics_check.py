"""Reads a codex-pool service's /metrics with the official Python client's OpenMetrics parser (run
by crates/cli/tests/openai.rs). Prints every sample as JSON: {"name{labels}": value}. Any line the
parser cannot read, a family without its HELP and TYPE, or another content type fails it.

Usage: metrics_check.py URL (e.g. http://127.0.0.1:7878/metrics)
"""

import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

with urllib.request.urlopen(sys.argv[1]) as answer:
    assert answer.headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8", answer.headers
    text = answer.read().decode("utf-8")
samples = {}
for family in text_string_to_metric_families(text):
    assert family.type in ("counter", "gauge", "histogram"), (family.name, family.type)
    assert family.documentation, family.name
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(samples))
