"""deploy/k8s validates offline: every manifest against the Kubernetes schemas (strict), the
kustomizations' files exist (and render, where kustomize or kubectl is installed), and the
operational rules of issue 8 hold (probes, resources, security, HPA, PDB, policies, config)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from paysys.core.config import ENV_VARS
from tests.support.deploy import (
    BASE,
    K8S_VERSION,
    LOCAL,
    SECRET_VARS,
    SERVICES,
    assemble_without_kustomize,
    containers,
    documented_unset,
    kustomization_files,
    kustomize_command,
    optional_settings,
    prepared_overlay,
    read_env_file,
    render,
    validate_k8s,
    yaml_docs,
)

MANIFESTS = sorted(
    path
    for path in [*BASE.glob("*.yaml"), *LOCAL.glob("*.yaml")]
    if path.name != "kustomization.yaml"
)


def base_objects() -> list[dict[str, Any]]:
    return [
        doc
        for path in BASE.glob("*.yaml")
        if path.name != "kustomization.yaml"
        for doc in yaml_docs(path)
    ]


def by_kind(kind: str, docs: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in (docs or base_objects()) if d["kind"] == kind}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_manifest_is_valid_for_the_pinned_kubernetes_version(path: Path) -> None:
    docs = yaml_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        validate_k8s(doc)


def test_validation_really_rejects_a_broken_manifest() -> None:
    import kubernetes_validate

    deployment = by_kind("Deployment")["payments"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(broken)


def test_kustomizations_reference_only_existing_files() -> None:
    for directory in (BASE, LOCAL):
        files = kustomization_files(directory)
        assert files
        missing = [
            str(f)
            for f in files
            if not f.exists() and f.name != "secrets.env"  # generated per machine, git-ignored
        ]
        assert not missing, missing
    # The local overlay's secrets file is generated (make-secrets.sh) from the example.
    assert (LOCAL / "secrets.env.example").exists()
    assert "secrets.env" in (LOCAL / ".gitignore").read_text().split()


def test_rendered_overlay_is_valid_and_complete(tmp_path: Path) -> None:
    """Render with kustomize (or `kubectl kustomize`) when one is installed; otherwise assemble
    the same objects from the files (generators included) and check them the same way."""
    overlay = prepared_overlay(tmp_path)
    if kustomize_command() is not None:
        docs = render(overlay)
    else:  # pragma: no cover - machines without kustomize/kubectl
        docs = assemble_without_kustomize(overlay)
    for doc in docs:
        validate_k8s(doc)
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["Deployment"] == len(SERVICES)
    assert kinds["HorizontalPodAutoscaler"] == 2
    assert kinds["PodDisruptionBudget"] == len(SERVICES)
    assert kinds["Job"] == 1 and kinds["Ingress"] == 1
    assert kinds["StatefulSet"] == 2  # local PostgreSQL + Redis
    if kustomize_command() is not None:
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
            "paysys"
        }
        # Generated names (hash suffixes) are wired into every reference.
        config = next(
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("paysys-config")
        )
        secret = next(d for d in docs if d["kind"] == "Secret")
        for deployment in (d for d in docs if d["kind"] in {"Deployment", "Job"}):
            spec = deployment["spec"]["template"]["spec"]
            for container in containers(spec):
                refs = {next(iter(e.values()))["name"] for e in container["envFrom"]}
                assert refs == {config["metadata"]["name"], secret["metadata"]["name"]}
        assert config["data"]["GATEWAY_URL"] == "http://paysys.localtest.me"


def test_the_offline_assembly_used_without_kustomize_is_valid_too(tmp_path: Path) -> None:
    docs = assemble_without_kustomize(prepared_overlay(tmp_path))
    for doc in docs:
        validate_k8s(doc)
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["Deployment"] == len(SERVICES) and kinds["StatefulSet"] == 2
    assert kinds["ConfigMap"] == 2 and kinds["Secret"] == 1


def test_a_deployment_and_service_per_service_with_the_three_probes() -> None:
    deployments, services = by_kind("Deployment"), by_kind("Service")
    assert set(deployments) == set(SERVICES) == set(services)
    for name in SERVICES:
        pod = deployments[name]["spec"]["template"]["spec"]
        (app,) = pod["containers"]
        assert app["command"] == ["paysys", "serve", name, "--host", "0.0.0.0"]
        assert app["image"] == "paysys"  # one image; the command chooses the service
        assert app["startupProbe"]["httpGet"]["path"] == "/health/live"
        assert app["readinessProbe"]["httpGet"]["path"] == "/health/ready"  # dependencies
        assert app["livenessProbe"]["httpGet"]["path"] == "/health/live"  # process only
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert app[probe]["httpGet"]["port"] == "http"
        assert app["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
        selector = deployments[name]["spec"]["selector"]["matchLabels"]
        assert services[name]["spec"]["selector"] == selector
        assert pod["terminationGracePeriodSeconds"] >= 5 + 10 + 10  # preStop + drain + workers
        assert app["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]


def test_every_container_has_requests_limits_and_a_locked_down_security_context() -> None:
    workloads = [*by_kind("Deployment").values(), *by_kind("Job").values()]
    assert len(workloads) == len(SERVICES) + 1
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
        assert pod["automountServiceAccountToken"] is False
        for container in containers(pod):
            resources = container["resources"]
            assert set(resources) == {"requests", "limits"}
            assert {"cpu", "memory"} <= set(resources["requests"]) <= set(resources["limits"])
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            # A read-only root needs a writable /tmp.
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])


def test_hpa_for_gateway_and_payments_and_a_pdb_for_every_service() -> None:
    hpas, pdbs, deployments = (
        by_kind("HorizontalPodAutoscaler"),
        by_kind("PodDisruptionBudget"),
        by_kind("Deployment"),
    )
    assert set(hpas) == {"gateway", "payments"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpa["spec"]["minReplicas"] >= 2
        # The HPA owns the replica count: the Deployment must not fight it on every apply.
        assert "replicas" not in deployments[name]["spec"]
    assert set(pdbs) == set(SERVICES)
    for name, pdb in pdbs.items():
        assert (
            pdb["spec"]["selector"]["matchLabels"]
            == (deployments[name]["spec"]["selector"]["matchLabels"])
        )
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])


def test_the_migration_job_runs_paysys_db_deploy_and_pods_wait_for_the_schema() -> None:
    (job,) = by_kind("Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["paysys", "db", "deploy"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    scripts = next(g for g in kustomization["configMapGenerator"] if g["name"] == "paysys-scripts")
    assert scripts["files"] == ["wait_for_schema.py"]
    for deployment in by_kind("Deployment").values():
        (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert init["command"] == ["python", "/opt/paysys-scripts/wait_for_schema.py"]


def test_only_the_gateway_is_exposed() -> None:
    policies = by_kind("NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    public = policies["gateway-public"]["spec"]
    assert public["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "gateway"
    internal = policies["services-from-gateway"]["spec"]
    names = next(
        e["values"]
        for e in internal["podSelector"]["matchExpressions"]
        if e["key"] == "app.kubernetes.io/name"
    )
    assert sorted(names) == sorted(set(SERVICES) - {"gateway"})
    (rule,) = internal["ingress"]
    assert rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "gateway",
                    "app.kubernetes.io/part-of": "paysys",
                }
            }
        }
    ]
    (ingress,) = by_kind("Ingress").values()
    backends = {
        p["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert backends == {"gateway"}
    assert all(s["spec"]["type"] == "ClusterIP" for s in by_kind("Service").values())


def test_every_setting_reaches_every_pod_from_the_configmap_or_the_secret() -> None:
    config = read_env_file(BASE / "config.env")
    (template,) = yaml_docs(BASE / "secret.template.yaml")
    secret_keys = set(template["stringData"])
    local_secret_keys = set(read_env_file(LOCAL / "secrets.env.example"))
    per_pod = {"SERVICE_NAME"}  # set per Deployment (env)
    assert secret_keys == SECRET_VARS
    assert local_secret_keys == SECRET_VARS | {"POSTGRES_PASSWORD"}
    unset = documented_unset(BASE / "config.env")
    assert unset <= optional_settings(), "only optional (None-default) settings may stay unset"
    missing = set(ENV_VARS) - set(config) - secret_keys - per_pod - unset
    assert not missing, f"settings not configured in deploy/k8s: {sorted(missing)}"
    leaked = set(config) & SECRET_VARS
    assert not leaked, f"secrets in the ConfigMap: {sorted(leaked)}"
    assert set(config) - set(ENV_VARS) <= {"HOST"}, "unknown variables in config.env"
    # Template placeholders only: no real secret committed.
    # (the verify-only rotation secrets are empty outside a rotation)
    assert all(
        "REPLACE_ME" in value or (key.endswith("_PREVIOUS") and value == "")
        for key, value in template["stringData"].items()
    )
    assert all(
        "REPLACE_ME" in value or key == "REDIS_URL" or (key.endswith("_PREVIOUS") and value == "")
        for key, value in read_env_file(LOCAL / "secrets.env.example").items()
    )
    assert config["ENV"] == "production"  # refuses development secrets
    for deployment in by_kind("Deployment").values():
        (app,) = deployment["spec"]["template"]["spec"]["containers"]
        assert app["envFrom"] == [
            {"configMapRef": {"name": "paysys-config"}},
            {"secretRef": {"name": "paysys-secrets"}},
        ]
        assert app["env"] == [{"name": "SERVICE_NAME", "value": deployment["metadata"]["name"]}]


def test_service_urls_point_at_the_cluster_services() -> None:
    config = read_env_file(BASE / "config.env")
    for name in ("auth", "payments", "admin", "profile"):
        assert config[f"{name.upper()}_SERVICE_URL"] == f"http://{name}"
    ports = {s["metadata"]["name"]: s["spec"]["ports"] for s in by_kind("Service").values()}
    assert all(
        p == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
        for p in ports.values()
    )
    assert K8S_VERSION.startswith("1.")


def test_the_ingress_routes_only_the_public_paths() -> None:
    """api-contracts §2.1: /health and /metrics stay inside the cluster; bodies up to the
    profile route's 8 MiB pass (the gateway applies the per-route limits itself)."""
    (ingress,) = by_kind("Ingress").values()
    paths = {
        (p["path"], p["pathType"], p["backend"]["service"]["name"])
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert paths == {
        ("/api", "Prefix", "gateway"),
        ("/ws", "Prefix", "gateway"),
        ("/docs", "Exact", "gateway"),
        ("/openapi.json", "Exact", "gateway"),
    }
    config = read_env_file(BASE / "config.env")
    body_limit = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(body_limit.removesuffix("m")) * 1024 * 1024 == int(config["PROFILE_MAX_BODY_BYTES"])


def test_trusted_proxies_is_the_pod_network() -> None:
    """Behind ingress-nginx the gateway must trust the ingress pods' X-Forwarded-For (else every
    client shares one rate-limit bucket), and the services the gateway's; both are pods."""
    import ipaddress

    config = read_env_file(BASE / "config.env")
    networks = [ipaddress.ip_network(item) for item in config["TRUSTED_PROXIES"].split(",")]
    assert networks == [ipaddress.ip_network("10.244.0.0/16")]
    assert all(network.is_private for network in networks)
    assert int(config["MAX_CONNECTIONS_PER_CLIENT"]) == 256
    assert int(config["GATEWAY_MAX_CONNECTIONS"]) == 4096
