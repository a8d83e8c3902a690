"""deploy/prometheus: promtool accepts the rule file and the compose Prometheus config, the
alerts' unit test (tests/data/deploy/alerts_test.yaml) passes, and every metric and label
the alerts use is one a real vault exports.

promtool comes from Debian's `prometheus` package (.ci/run installs it). Without it the
promtool tests are skipped, except in CI (CI=true), where a missing promtool fails."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import urllib.request
from typing import Any

import grpc
import pytest
from deploy_helpers import PROMETHEUS, ROOT, mtls_credentials, yaml_document
from prometheus_client.parser import text_string_to_metric_families

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc

ALERTS = PROMETHEUS / "alerts.yaml"
ALERTS_TEST = ROOT / "tests" / "data" / "deploy" / "alerts_test.yaml"
MISSING = "promtool is not installed (Debian package `prometheus`; .ci/run installs it)"
# What each alert is for (issue 5): the metric its expression must use.
REQUIRED = {
    "VaultRevealSpike": "vault_tokens_revealed_total",
    "VaultAuditWriteFailures": "vault_audit_write_failures_total",
    "VaultAuditChainBroken": "vault_audit_chain_broken",
    "VaultAuthFailures": "vault_auth_failures_total",
    "VaultKeyNearUsageLimit": "vault_key_usage_ratio",
    "VaultRewrapStalled": "vault_rewrap_last_progress_timestamp_seconds",
    # Issue 13: tokenize harvesting.
    "VaultTokenizeBudgetExhausted": "vault_tokenize_budget_refused_items_total",
    "VaultTokenizeSpike": "vault_tokenize_items_total",
}
_METRIC = re.compile(r"\bvault_[a-z0-9_]+\b")
# `sum by (kind) (rate(vault_tokens_revealed_total[5m]))`: the grouping labels and the
# metric they group.
_GROUPED = re.compile(r"\bby\s*\(([\w\s,]*)\)\s*\(\s*\w+\(\s*(vault_[a-z0-9_]+)")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml_document(ALERTS)["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rule_file():
    result = _run("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_compose_prometheus_config_and_its_rules():
    result = _run("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_rules())} rules found" in result.stdout


def test_each_alert_fires_on_its_case_and_not_on_normal_traffic():
    result = _run("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert has a case in the unit test.
    tested = set(re.findall(r"alertname:\s*(\w+)", ALERTS_TEST.read_text(encoding="utf-8")))
    assert tested == {rule["alert"] for rule in _rules()}


def test_every_alert_is_labelled_and_explained():
    for rule in _rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_the_alerts_cover_what_the_issue_asks_for():
    exprs = {rule["alert"]: rule["expr"] for rule in _rules()}
    for alert, metric in REQUIRED.items():
        assert metric in _METRIC.findall(exprs[alert]), alert


async def _exported(port: int) -> dict[str, set[str]]:
    """Metric names a scrape shows, each with the label names its samples carry."""

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(await asyncio.to_thread(get)):
        # A labelled metric no call has touched yet has no sample, only its family.
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        for suffix in suffixes.get(family.type, [""]):
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


async def test_alert_metrics_and_labels_are_what_a_running_vault_exports(deployed_vault, tmp_path):
    # Touch the labelled metrics the alerts group by: a reveal (kind) and a refused
    # credential (reason). Over mTLS, as the deployed vault serves.
    target = f"127.0.0.1:{deployed_vault.port}"
    credentials = mtls_credentials(tmp_path / "certs", "ops")
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        md = (("authorization", f"Bearer {deployed_vault.dev_key}"),)
        created = await stub.Tokenize(
            pb.TokenizeRequest(kind="DATA_KIND_TEXT", text="a note"), metadata=md
        )
        await stub.Detokenize(
            pb.DetokenizeRequest(token=created.token, purpose="deploy test"), metadata=md
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Detokenize(pb.DetokenizeRequest(token=created.token, purpose="x"))
    exported = await _exported(deployed_vault.metrics_port)

    for rule in _rules():
        for metric in _METRIC.findall(rule["expr"]):
            assert metric in exported, (rule["alert"], metric)
        for labels, metric in _GROUPED.findall(rule["expr"]):
            wanted = {label.strip() for label in labels.split(",") if label.strip()}
            assert wanted <= exported[metric], (rule["alert"], metric, wanted)
