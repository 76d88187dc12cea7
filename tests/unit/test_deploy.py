"""The Kubernetes manifests validate against the official schemas (offline)."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.support import REPO

MANIFESTS = REPO / "deploy" / "kubernetes" / "recsys.yaml"
SPLIT = REPO / "deploy" / "kubernetes" / "split.yaml"
DASK = REPO / "deploy" / "kubernetes" / "dask.yaml"
KUBERNETES = "1.30.0"


def documents(path=MANIFESTS) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize(
    "doc", documents() + documents(SPLIT) + documents(DASK), ids=lambda d: f"{d['kind']}-{d['metadata']['name']}"
)
def test_manifest_is_valid(doc):
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_validator_catches_a_broken_manifest():
    broken = documents()[0]
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_probes_and_resources():
    deployment = next(d for d in documents() if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert set(container["resources"]) == {"requests", "limits"}
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    kinds = {d["kind"] for d in documents()}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler"}


def test_probes_go_to_the_probe_port_the_service_opens_and_the_cluster_service_does_not_expose():
    deployment = next(d for d in documents() if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RECSYS_HEALTH_PORT"] == str(ports["probes"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "probes"
        assert container[probe]["timeoutSeconds"] == 1
    service = next(d for d in documents() if d["kind"] == "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_split_form_one_deployment_and_autoscaler_per_stage_and_the_entry_finds_them_by_service_name():
    docs = documents(SPLIT)
    by_kind = {
        kind: {d["metadata"]["name"]: d for d in docs if d["kind"] == kind} for kind in {d["kind"] for d in docs}
    }
    stages = {"recsys-entry", "recsys-candidates", "recsys-ranker"}
    assert set(by_kind["Deployment"]) == set(by_kind["Service"]) == stages
    assert {h["spec"]["scaleTargetRef"]["name"] for h in by_kind["HorizontalPodAutoscaler"].values()} == stages
    containers = {name: d["spec"]["template"]["spec"]["containers"][0] for name, d in by_kind["Deployment"].items()}
    for name, container in containers.items():
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert set(container["resources"]) == {"requests", "limits"}
        assert by_kind["Deployment"][name]["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        service = by_kind["Service"][name]
        assert service["spec"]["selector"] == by_kind["Deployment"][name]["spec"]["selector"]["matchLabels"]
    # Each stage pod serves only its own service of the Bento (BentoML's --service-name).
    for stage in ("recsys-candidates", "recsys-ranker"):
        assert containers[stage]["args"][:3] == ["start-http-server", "--service-name", stage]
    # The entry reaches each stage by its Service name and port.
    env = {e["name"]: e["value"] for e in containers["recsys-entry"]["env"]}
    for stage, variable in (
        ("recsys-candidates", "RECSYS_SPLIT_CANDIDATES_URL"),
        ("recsys-ranker", "RECSYS_SPLIT_RANKER_URL"),
    ):
        port = by_kind["Service"][stage]["spec"]["ports"][0]["port"]
        assert env[variable] == f"http://{stage}:{port}"


def test_training_on_kubernetes_workers_and_job_run_one_image_and_find_the_scheduler_by_its_service():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in documents(DASK)}
    service = docs["Service", "recsys-dask-scheduler"]
    address = f"tcp://recsys-dask-scheduler:{service['spec']['ports'][0]['port']}"
    pods = {name: d["spec"]["template"]["spec"] for (kind, name), d in docs.items() if kind in ("Deployment", "Job")}
    assert service["spec"]["selector"] == docs["Deployment", "recsys-dask-scheduler"]["spec"]["selector"]["matchLabels"]
    assert len({pod["containers"][0]["image"] for pod in pods.values()}) == 1  # the trainer's code on every worker
    assert all(pod["securityContext"]["runAsNonRoot"] for pod in pods.values())
    worker = pods["recsys-dask-worker"]["containers"][0]["command"]
    assert worker[:4] == ["python", "-m", "train.worker", address]  # pinned kernels, not `dask worker`
    job = docs["Job", "recsys-train"]
    assert f"--engine={address}" in job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert job["spec"]["backoffLimit"] == 0 and pods["recsys-train"]["restartPolicy"] == "Never"
