"""helm/gateway refuses wrong values with a clear message; the checks themselves are checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "gateway"


# --- wrong values fail with a message that says what is wrong -------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"replicaCount": -1}, "at '/replicaCount': minimum: got -1, want 0", id="negative-replicas"
        ),
        pytest.param(
            {"autoscaling": {"minReplicas": 0}},
            "at '/autoscaling/minReplicas': minimum: got 0, want 1",
            id="zero-min-replicas",
        ),
        pytest.param(
            {"autoscaling": {"maxReplicas": -3}},
            "at '/autoscaling/maxReplicas': minimum: got -3, want 1",
            id="negative-max-replicas",
        ),
        pytest.param(
            {"redis": {"bundled": {"enabled": False}, "url": "http://redis:6379"}},
            "at '/redis/url': 'http://redis:6379' does not match pattern",
            id="bad-redis-scheme",
        ),
        pytest.param(
            {"autoscaling": {"requestsPerSecond": {"enabled": True, "targetAverageValue": ""}}},
            "at '/autoscaling/requestsPerSecond/targetAverageValue': '' does not match pattern",
            id="rps-without-target",
        ),
        pytest.param({"replicaCuont": 3}, "additional properties 'replicaCuont' not allowed", id="typo"),
        pytest.param({"config": {"log": {"format": "xml"}}}, "at '/config/log/format'", id="log-format"),
        pytest.param(
            {"serviceMonitor": {"interval": "often"}}, "at '/serviceMonitor/interval'", id="duration"
        ),
    ],
)
def test_schema_rejects(render_unchecked, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as excinfo:
        render_unchecked(values)
    assert "values don't meet the specifications of the schema" in str(excinfo.value)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"autoscaling": {"minReplicas": 9, "maxReplicas": 4}},
            "gateway: autoscaling.minReplicas (9) must not exceed autoscaling.maxReplicas (4)",
            id="min-over-max",
        ),
        pytest.param(
            {"autoscaling": {"targetCPUUtilizationPercentage": None}},
            "gateway: autoscaling is enabled but has no metric",
            id="hpa-without-metric",
        ),
        pytest.param(
            {"redis": {"url": "redis://elsewhere:6379"}},
            "gateway: redis.bundled.enabled and an external Redis (redis.url) exclude each other",
            id="bundled-and-external",
        ),
        pytest.param(
            {"terminationGracePeriodSeconds": 30},
            "gateway: terminationGracePeriodSeconds (30) must exceed config.server.drain_timeout_s "
            "+ preStopSleepSeconds (35)",
            id="grace-too-short",
        ),
        pytest.param(
            {"podDisruptionBudget": {"minAvailable": 1}},
            "gateway: set only one of podDisruptionBudget.minAvailable and "
            "podDisruptionBudget.maxUnavailable",
            id="pdb-both",
        ),
    ],
)
def test_impossible_combinations_fail(render_unchecked, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError) as excinfo:
        render_unchecked(values)
    assert message in str(excinfo.value)


def test_min_equal_max_is_allowed(render) -> None:
    r = render({"autoscaling": {"minReplicas": 4, "maxReplicas": 4}})
    spec = r.one("HorizontalPodAutoscaler")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (4, 4)


# --- the checks themselves -------------------------------------------------------------------------


def test_validator_catches_a_broken_manifest(render_unchecked, validate) -> None:
    """Guard against vacuous passes: a misspelt field must fail strict validation."""
    deployment = render_unchecked().deployment
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(AssertionError, match="httpGett"):
        validate(deployment)
    monitor = render_unchecked({"serviceMonitor": {"enabled": True}}).one("ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervl"] = "5s"
    with pytest.raises(Exception, match="intervl"):
        validate(monitor)


def test_unknown_kinds_are_not_waved_through(validate) -> None:
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_helm_lint_is_clean() -> None:
    report = helm_python.lint(CHART_DIR, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_top_level_value_is_documented() -> None:
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z][A-Za-z0-9]*:", line):
            previous = next((p for p in reversed(lines[:i]) if p.strip()), "")
            if not previous.startswith("#"):
                undocumented.append(line.split(":")[0])
    # A top-level map is documented by the comments on its keys; only scalars and lists need one.
    values = yaml.safe_load("\n".join(lines))
    assert [k for k in undocumented if not isinstance(values[k], dict)] == []


def test_schema_covers_every_default_value(chart: helm_python.Chart) -> None:
    """values.schema.json lists every top-level value, so typos are caught (additionalProperties)."""
    schema = chart.schema
    assert schema is not None
    assert schema["additionalProperties"] is False
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"])
    chart.validate_schema(defaults)


def test_chart_files_are_where_the_docs_say() -> None:
    templates = {p.name for p in (CHART_DIR / "templates").iterdir()}
    assert {
        "deployment.yaml",
        "hpa.yaml",
        "configmap.yaml",
        "secret.yaml",
        "service.yaml",
        "NOTES.txt",
        "_helpers.tpl",
        "redis.yaml",
        "ingress.yaml",
        "servicemonitor.yaml",
        "poddisruptionbudget.yaml",
        "serviceaccount.yaml",
        "networkpolicy.yaml",
    } <= templates
    assert Path(CHART_DIR / "values-production.yaml").is_file()
