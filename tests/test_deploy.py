"""deploy/: the alert rules are valid Prometheus rules over metrics the gateway really serves."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import yaml

from seekwire.client import AsyncClient
from tests.conftest import Served

DEPLOY = Path(__file__).parent.parent / "deploy"
_METRIC = re.compile(r"\b((?:rpc|gen_ai|seekwire)_[a-z_]+)")
# Counters that appear on the endpoint only once something was counted.
_ONLY_AFTER_EVENTS = {"seekwire_ratelimit_rejections_total"}


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian's prometheus package; .ci/run installs it)"
    result = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus-rules.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def _names() -> set[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {name for expr in exprs for name in _METRIC.findall(expr)}


async def test_rules_and_dashboard_use_served_metric_names(served: Served) -> None:
    async with AsyncClient.connect(served.target, api_key=served.api_key) as client:
        _ = [c async for c in client.stream_chat("Hello")]

    def scrape() -> str:
        with urllib.request.urlopen(served.metrics_url, timeout=5) as response:  # noqa: S310
            return str(response.read().decode())

    served_names = set(_METRIC.findall(await asyncio.to_thread(scrape)))
    missing = _names() - served_names - _ONLY_AFTER_EVENTS
    assert not missing, missing
