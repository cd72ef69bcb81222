"""helm/gateway rendered per feature: each override lands where it belongs, nothing else moves."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "gateway"
NAMESPACE = "ai"  # conftest renders release "gw" into namespace "ai"
FULLNAME = "gw-gateway"
REDIS_SVC = f"{FULLNAME}-redis"


# --- defaults ----------------------------------------------------------------------------------


def test_defaults_render_the_full_set(render) -> None:
    r = render()
    assert r.kinds() == sorted(
        [
            f"ConfigMap/{FULLNAME}",
            f"Deployment/{FULLNAME}",
            f"HorizontalPodAutoscaler/{FULLNAME}",
            f"PodDisruptionBudget/{FULLNAME}",
            f"Secret/{FULLNAME}",
            f"Service/{FULLNAME}",
            f"Service/{REDIS_SVC}",
            f"ServiceAccount/{FULLNAME}",
            f"StatefulSet/{REDIS_SVC}",
        ]
    )


def test_defaults_hpa_owns_replicas(render) -> None:
    r = render()
    assert "replicas" not in r.deployment["spec"]
    hpa = r.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
        },
    ]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_defaults_probes_and_graceful_termination(render) -> None:
    r = render()
    c = r.container
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    drain = r.gateway_config["server"]["drain_timeout_s"]
    assert drain == 30
    assert r.pod_spec["terminationGracePeriodSeconds"] > drain + 5
    assert c["args"] == [
        "serve",
        "--config",
        "/etc/gateway/config.yaml",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert c["image"] == "gateway:0.1.0"


def test_defaults_restricted_security_context(render) -> None:
    r = render()
    pod = r.pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = r.container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in r.container["volumeMounts"]}
    volumes = {v["name"]: v for v in r.pod_spec["volumes"]}
    assert volumes[mounts["/tmp"]] == {"name": "tmp", "emptyDir": {}}
    assert volumes[mounts["/etc/gateway"]]["configMap"]["name"] == FULLNAME
    assert r.pod_spec["automountServiceAccountToken"] is False
    assert r.pod_spec["serviceAccountName"] == FULLNAME
    redis_pod = r.one("StatefulSet", REDIS_SVC)["spec"]["template"]["spec"]
    assert redis_pod["securityContext"]["runAsNonRoot"] is True
    assert redis_pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_defaults_spread_across_nodes(render) -> None:
    r = render()
    (spread,) = r.pod_spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"] == r.deployment["spec"]["selector"]["matchLabels"]


def test_selectors_agree(render) -> None:
    r = render()
    pod_labels = r.deployment["spec"]["template"]["metadata"]["labels"]
    selector = r.deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert r.one("Service")["spec"]["selector"] == selector
    assert r.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert r.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    # The Redis Service must not select gateway pods, nor the gateway Service Redis.
    redis_selector = r.one("Service", REDIS_SVC)["spec"]["selector"]
    assert redis_selector != selector
    assert redis_selector == r.one("StatefulSet", REDIS_SVC)["spec"]["selector"]["matchLabels"]


def test_defaults_config_map_is_the_gateway_config(render) -> None:
    config = render().gateway_config
    assert config["server"]["host"] == "0.0.0.0"
    assert config["server"]["port"] == 8080
    assert config["store"]["redis_url"] == f"redis://{REDIS_SVC}:6379/0"
    assert config["providers"]["openai"] == {
        "kind": "openai",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
    }
    assert config["providers"]["anthropic"]["api_key_env"] == "ANTHROPIC_API_KEY"
    assert config["auth"]["master_key_env"] == "GATEWAY_MASTER_KEY"
    assert config["log"]["format"] == "json"


def test_defaults_env_comes_from_the_chart_secret(render) -> None:
    r = render()
    assert r.container["envFrom"] == [{"secretRef": {"name": FULLNAME}}]
    assert r.one("Secret")["data"] == {}  # empty values are left out, not set to ""
    assert "GATEWAY_WORKERS" not in r.env()  # workers follow the CPU quota
    annotations = r.deployment["spec"]["template"]["metadata"]["annotations"]
    assert {"checksum/config", "checksum/secret"} <= annotations.keys()


def test_defaults_notes_tell_how_to_reach_it(render) -> None:
    notes = render().notes
    assert f"kubectl port-forward -n {NAMESPACE} svc/{FULLNAME} 8080:80" in notes
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:80/v1" in notes
    assert "WARNING" not in notes


# --- overrides -------------------------------------------------------------------------------


def test_hpa_off_fixed_replicas(render) -> None:
    r = render({"autoscaling": {"enabled": False}, "replicaCount": 5})
    assert not r.all("HorizontalPodAutoscaler")
    assert r.deployment["spec"]["replicas"] == 5
    assert "Pods: 5 (fixed" in r.notes


def test_hpa_custom_range_and_targets(render) -> None:
    r = render(
        {
            "autoscaling": {
                "minReplicas": 3,
                "maxReplicas": 12,
                "targetCPUUtilizationPercentage": 60,
                "targetMemoryUtilizationPercentage": 75,
                "requestsPerSecond": {"enabled": True, "metricName": "gw_rps", "targetAverageValue": "250"},
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}},
            },
        }
    )
    assert "replicas" not in r.deployment["spec"]
    spec = r.one("HorizontalPodAutoscaler")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 12)
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
        },
        {
            "type": "Resource",
            "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 75}},
        },
        {
            "type": "Pods",
            "pods": {"metric": {"name": "gw_rps"}, "target": {"type": "AverageValue", "averageValue": "250"}},
        },
    ]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_hpa_on_requests_per_second_alone(render) -> None:
    r = render(
        {"autoscaling": {"targetCPUUtilizationPercentage": None, "requestsPerSecond": {"enabled": True}}}
    )
    metrics = r.one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Pods"]
    assert metrics[0]["pods"]["metric"]["name"] == "gateway_requests_per_second"


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis.internal:6379/0",
        "rediss://:s3cret@redis.internal:6380/2",
        "redis+sentinel://sentinel-0.internal:26379,sentinel-1.internal:26379/mymaster/0",
    ],
)
def test_external_redis_url(render, url: str) -> None:
    r = render({"redis": {"bundled": {"enabled": False}, "url": url}})
    assert not r.all("StatefulSet")
    assert not r.has("Service", REDIS_SVC)
    assert r.gateway_config["store"]["redis_url"] == url
    assert "GATEWAY_REDIS_URL" not in r.env()
    assert "Store: external Redis" in r.notes


def test_external_redis_url_from_secret(render) -> None:
    r = render(
        {
            "redis": {
                "bundled": {"enabled": False},
                "existingSecret": "redis-creds",
                "existingSecretKey": "url",
            }
        }
    )
    assert r.env()["GATEWAY_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-creds", "key": "url"}
    }
    assert r.gateway_config["store"]["redis_url"] == ""  # the env var overrides the file
    assert not r.all("StatefulSet")


def test_no_redis_with_many_pods_warns(render) -> None:
    r = render({"redis": {"bundled": {"enabled": False}}})
    assert r.gateway_config["store"]["redis_url"] == ""
    assert "WARNING: more than one pod and no Redis" in r.notes


def test_ingress_and_servicemonitor(render) -> None:
    r = render(
        {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
                "hosts": [{"host": "llm.example.com", "paths": [{"path": "/v1", "pathType": "Prefix"}]}],
                "tls": [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}],
            },
            "serviceMonitor": {
                "enabled": True,
                "interval": "15s",
                "scrapeTimeout": "5s",
                "labels": {"release": "prometheus"},
            },
        }
    )
    ingress = r.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-buffering": "off"}
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "llm.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/v1",
            "pathType": "Prefix",
            "backend": {"service": {"name": FULLNAME, "port": {"name": "http"}}},
        }
    ]
    assert ingress["spec"]["tls"] == [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}]
    assert "https://llm.example.com/v1" in r.notes

    monitor = r.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    service = r.one("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_bundled_redis_with_persistence(render) -> None:
    r = render(
        {"redis": {"bundled": {"persistence": {"enabled": True, "size": "5Gi", "storageClass": "fast"}}}}
    )
    sts = r.one("StatefulSet", REDIS_SVC)
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == REDIS_SVC
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert "volumes" not in sts["spec"]["template"]["spec"]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert r.one("Service", REDIS_SVC)["spec"]["ports"][0]["port"] == 6379


def test_bundled_redis_without_persistence_keeps_nothing(render) -> None:
    sts = render().one("StatefulSet", REDIS_SVC)
    assert "volumeClaimTemplates" not in sts["spec"]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--save") + 1] == ""
    assert args[args.index("--appendonly") + 1] == "no"


def test_provider_keys_in_the_chart_secret(render) -> None:
    r = render({"secret": {"env": {"OPENAI_API_KEY": "sk-test", "GATEWAY_MASTER_KEY": "master"}}})
    data = r.one("Secret")["data"]
    assert {k: base64.b64decode(v).decode() for k, v in data.items()} == {
        "OPENAI_API_KEY": "sk-test",
        "GATEWAY_MASTER_KEY": "master",
    }
    # The config names the variables; it never carries the keys.
    assert "sk-test" not in r.one("ConfigMap")["data"]["config.yaml"]


def test_existing_secret(render) -> None:
    r = render({"secret": {"existingSecret": "team-keys", "env": {"OPENAI_API_KEY": "ignored"}}})
    assert not r.all("Secret")
    assert r.container["envFrom"] == [{"secretRef": {"name": "team-keys"}}]
    assert "checksum/secret" not in r.deployment["spec"]["template"]["metadata"]["annotations"]


def test_workers_and_grace_period_follow_values(render) -> None:
    r = render(
        {
            "workers": 3,
            "preStopSleepSeconds": 10,
            "config": {"server": {"drain_timeout_s": 120}},
            "extraEnv": [{"name": "GATEWAY_LOG_FORMAT", "value": "console"}],
        }
    )
    assert r.env()["GATEWAY_WORKERS"] == {"name": "GATEWAY_WORKERS", "value": "3"}
    assert r.env()["GATEWAY_LOG_FORMAT"] == {"name": "GATEWAY_LOG_FORMAT", "value": "console"}
    assert r.pod_spec["terminationGracePeriodSeconds"] == 140
    assert r.container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert r.gateway_config["server"]["drain_timeout_s"] == 120
    assert r.gateway_config["server"]["max_body_bytes"] == 10485760  # user maps merge, not replace


def test_image_digest_and_pdb_min_available(render) -> None:
    digest = "sha256:" + "a" * 64
    r = render(
        {
            "image": {"repository": "registry.example.com/gw", "digest": digest},
            "podDisruptionBudget": {"maxUnavailable": None, "minAvailable": "50%"},
        }
    )
    assert r.container["image"] == f"registry.example.com/gw@{digest}"
    pdb = r.one("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == "50%"
    assert "maxUnavailable" not in pdb


def test_production_values_file(render) -> None:
    values = yaml.safe_load((CHART_DIR / "values-production.yaml").read_text())
    r = render(values)
    assert not r.all("StatefulSet"), "production values must not bundle Redis"
    assert r.env()["GATEWAY_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "gateway-keys"
    assert r.container["envFrom"] == [{"secretRef": {"name": "gateway-keys"}}]
    assert not r.all("Secret")
    assert {"Ingress", "ServiceMonitor", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= {
        o["kind"] for o in r.objects
    }
    assert "replicas" not in r.deployment["spec"]
    keys = [c["topologyKey"] for c in r.pod_spec["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]


# --- the gateway accepts what the chart renders --------------------------------------------------


@pytest.mark.parametrize("values", [
    None,
    {"redis": {"bundled": {"enabled": False}, "url": "redis://cache.example:6379/0"}},
])
def test_rendered_config_passes_the_gateways_own_loader(render, tmp_path: Path, values) -> None:
    from gateway.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(render(values).gateway_config))
    cfg = load_config(path, environ={})
    assert cfg.server.port == 8080 and cfg.server.host == "0.0.0.0"
    assert {m.name for m in cfg.models} == {"gpt-4o-mini", "claude-sonnet-4-5"}
    assert set(cfg.providers) == {"openai", "anthropic"}
