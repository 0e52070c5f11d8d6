"""The code location as deployed on Kubernetes: the same definitions, each step a Kubernetes
Job (dagster-k8s `k8s_job_executor`, configured from deploy/executor.yaml).

Needs the `k8s` extra (`pip install -e '.[k8s]'`); the Helm chart's user deployment serves
it with `dagster api grpc -m pipelines.k8s_location` (deploy/helm/values.yaml).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml

from pipelines.dbt_project import REPO_ROOT
from pipelines.definitions import build_definitions

EXECUTOR_CONFIG = REPO_ROOT / "deploy" / "executor.yaml"


def executor_config(path: Path | None = None) -> dict:
    """The executor settings: HUB_K8S_EXECUTOR_CONFIG, else deploy/executor.yaml."""
    path = path or Path(os.environ.get("HUB_K8S_EXECUTOR_CONFIG") or EXECUTOR_CONFIG)
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def k8s_executor(path: Path | None = None) -> dg.ExecutorDefinition:
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError:
        raise ImportError(
            "dagster-k8s is not installed: pip install -e '.[k8s]' (the Kubernetes extra)"
        ) from None
    return k8s_job_executor.configured(executor_config(path), name="k8s_hub_executor")


def build_k8s_definitions(resource_overrides: dict[str, object] | None = None) -> dg.Definitions:
    return dg.Definitions.merge(
        build_definitions(resource_overrides), dg.Definitions(executor=k8s_executor())
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_k8s_definitions()
