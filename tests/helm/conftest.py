"""Render helm/gateway with the real Helm engine and validate what comes out.

Helm runs in-process through helm-python-sdk (it embeds Helm's Go SDK; no helm binary, no
cluster). Every rendered object is checked against the Kubernetes OpenAPI schemas shipped by
kubernetes-validate, in strict mode (unknown fields fail), for the oldest Kubernetes the chart
supports and the newest the package knows. The only custom resource, the Prometheus Operator's
ServiceMonitor, has no schema there: it is checked against SERVICEMONITOR_SCHEMA below, a subset of
the CRD's openAPIV3Schema covering the fields the chart writes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "gateway"
RELEASE = "gw"
NAMESPACE = "ai"
FULLNAME = "gw-gateway"

# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())

_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}

# monitoring.coreos.com/v1 ServiceMonitor: the CRD's structure for the fields we render, with
# unknown fields rejected so a typo cannot pass.
SERVICEMONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "labels": _LABELS,
                "annotations": _LABELS,
                "namespace": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": _LABELS, "matchExpressions": {"type": "array"}},
                    "additionalProperties": False,
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                    "additionalProperties": False,
                },
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}

CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICEMONITOR_SCHEMA}


def validate_object(obj: dict[str, Any]) -> None:
    """Raise if obj is not a valid object of its kind; an unknown kind is a failure too."""
    crd_schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if crd_schema is not None:
        jsonschema.Draft7Validator(crd_schema).validate(obj)
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            raise AssertionError(
                f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version} at {where}: "
                f"{exc.message}"
            ) from None


@dataclass
class Rendered:
    """One render of the chart: objects by kind and name, plus NOTES.txt."""

    objects: list[dict[str, Any]]
    notes: str
    files: dict[str, str] = field(repr=False)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str = FULLNAME) -> dict[str, Any]:
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}: {self.kinds()}"
        return found[0]

    def has(self, kind: str, name: str = FULLNAME) -> bool:
        return any(o["metadata"]["name"] == name for o in self.all(kind))

    def kinds(self) -> list[str]:
        return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in self.objects)

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod_spec["containers"]
        assert [c["name"] for c in containers] == ["gateway"]
        return containers[0]

    @property
    def gateway_config(self) -> dict[str, Any]:
        """config.yaml from the ConfigMap, parsed as the gateway will parse it."""
        config: dict[str, Any] = yaml.safe_load(self.one("ConfigMap")["data"]["config.yaml"])
        return config

    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.container.get("env", [])}


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render_chart(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> Rendered:
    files = chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(objects=objects, notes=notes, files=files)


@pytest.fixture
def render_unchecked(chart: helm_python.Chart) -> Callable[..., Rendered]:
    """render_unchecked(values) -> Rendered; Helm's own errors (schema, `fail`) propagate."""

    def _render(values: dict[str, Any] | None = None) -> Rendered:
        return render_chart(chart, values)

    return _render


@pytest.fixture
def render(chart: helm_python.Chart) -> Callable[..., Rendered]:
    """render(values) -> Rendered, every object already validated."""

    def _render(values: dict[str, Any] | None = None) -> Rendered:
        rendered = render_chart(chart, values)
        for obj in rendered.objects:
            validate_object(obj)
        return rendered

    return _render


@pytest.fixture
def validate() -> Callable[[dict[str, Any]], None]:
    return validate_object
