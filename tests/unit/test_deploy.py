"""The Kubernetes manifests validate against the official schemas (offline)."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.support import REPO

MANIFESTS = REPO / "deploy" / "kubernetes" / "recsys.yaml"
KUBERNETES = "1.30.0"


def documents() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(MANIFESTS.read_text()) if doc]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d["kind"])
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
