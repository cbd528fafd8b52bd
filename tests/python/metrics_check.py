"""Reads a codex-pool service's /metrics with Prometheus' own text parser (run by
crates/cli/tests/openai.rs). Prints every sample as JSON: {"name{labels}": value}. Any line the
parser cannot read, or a family without its HELP and TYPE, fails it.

Usage: metrics_check.py URL (e.g. http://127.0.0.1:7878/metrics)
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

with urllib.request.urlopen(sys.argv[1]) as answer:
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4"), answer.headers
    text = answer.read().decode("utf-8")
samples = {}
for family in text_string_to_metric_families(text):
    assert family.type in ("counter", "gauge", "histogram"), (family.name, family.type)
    assert family.documentation, family.name
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(samples))
