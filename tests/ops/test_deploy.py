"""Deployment: the definitions load with the Kubernetes executor, and every file in deploy/
is valid configuration for the thing it configures and names settings the hub reads."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_ENV = {
    "HUB_K8S_NAMESPACE": "audience-hub",
    "DAGSTER_PG_HOST": "dagster-db.internal",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "not-a-real-password",
}


@pytest.fixture
def k8s_env(monkeypatch):
    for name, value in K8S_ENV.items():
        monkeypatch.setenv(name, value)


def test_the_definitions_load_with_the_kubernetes_executor(k8s_env):
    from dagster_k8s import k8s_job_executor

    from pipelines.k8s_location import build_k8s_definitions, executor_config

    config = executor_config()
    validated = process_config(k8s_job_executor.config_schema.config_type, config)
    assert validated.success, validated.errors
    assert validated.value["job_namespace"] == "audience-hub"  # resolved from the environment

    defs = build_k8s_definitions()
    dg.Definitions.validate_loadable(defs)
    for job in ("full_pipeline", "incremental", "consent_fast_path", "ingest_file", "journeys"):
        assert defs.resolve_job_def(job).executor_def.name == "k8s_hub_executor"
    assert defs.resolve_sensor_def("inbound_files_sensor")  # partitions fan out as runs


def test_the_instance_config_is_valid_for_kubernetes_and_postgres(k8s_env):
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import DagsterPostgresStorage

    config, _ = dagster_instance_config(str(DEPLOY), "dagster.yaml")
    launcher = config["run_launcher"]
    assert launcher["class"] == "K8sRunLauncher"
    checked = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors
    storage = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert storage.success, storage.errors
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {
        "key": "hub/destination",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    } in limits


def test_helm_values_use_k8s_launcher_managed_postgres_and_the_k8s_location():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlParams"]["sslmode"] == "verify-full"
    assert values["ingress"]["enabled"] is False  # only through oauth2-proxy
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "pipelines.k8s_location"]
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    keys = {
        limit["key"]
        for limit in coordinator["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    }
    assert "hub/destination" in keys

    proxy = yaml.safe_load((DEPLOY / "helm" / "oauth2-proxy-values.yaml").read_text())
    settings = proxy["config"]["configFile"]
    assert 'provider = "oidc"' in settings and 'acr_values = "mfa"' in settings
    assert "dagster-dagster-webserver" in settings


def test_every_setting_deploy_sets_is_one_the_hub_or_dagster_reads():
    code = "\n".join(
        p.read_text()
        for folder in ("pipelines", "connectors", "domain", "services", "assets")
        for p in (REPO / folder).rglob("*.py")
    )
    deployed = set()
    for path in [*DEPLOY.rglob("*.yaml")]:
        for document in yaml.safe_load_all(path.read_text()):
            deployed |= set(
                re.findall(r"\b(HUB_[A-Z0-9_]+|DATABASE_URL)\b", yaml.safe_dump(document))
            )
    dagster_instance = {"HUB_K8S_NAMESPACE"}  # read by deploy/dagster.yaml and executor.yaml
    unknown = {name for name in deployed - dagster_instance if name not in code}
    assert deployed and not unknown, unknown
