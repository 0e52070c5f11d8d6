"""dbt models as Dagster assets, split by selector: the core models (staging to audiences)
run before activation, the `feedback` models (engagement) after events are read back."""

import os

import dagster as dg
from dagster_dbt import DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from pipelines.dbt_project import HubDbtTranslator, dbt_project
from pipelines.resources import WarehouseResource

FEEDBACK_SELECTOR = "tag:feedback"


def _run_dbt(context, dbt: DbtCliResource, warehouse: WarehouseResource, evaluation_date: str):
    # dbt reads the same connection as the Python side (profiles.yml uses these variables).
    os.environ.update(warehouse.warehouse().dbt_env())
    os.environ.setdefault("DO_NOT_TRACK", "1")
    args = ["build"]
    if evaluation_date:
        args += ["--vars", f"{{evaluation_date: '{evaluation_date}'}}"]
    yield from dbt.cli(args, context=context).stream()


class DbtBuildConfig(dg.Config):
    evaluation_date: str = ""  # YYYY-MM-DD; empty: today


def build_dbt_assets() -> list[dg.AssetsDefinition]:
    project = dbt_project()
    # Source tests (e.g. person_xref uniqueness) become checks on the Python assets they test.
    translator = HubDbtTranslator(DagsterDbtTranslatorSettings(enable_source_tests_as_checks=True))

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        exclude=FEEDBACK_SELECTOR,
        dagster_dbt_translator=translator,
        name="dbt_models",
    )
    def dbt_models(
        context: dg.AssetExecutionContext,
        config: DbtBuildConfig,
        dbt: DbtCliResource,
        warehouse: WarehouseResource,
    ):
        yield from _run_dbt(context, dbt, warehouse, config.evaluation_date)

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        select=FEEDBACK_SELECTOR,
        dagster_dbt_translator=translator,
        name="dbt_feedback_models",
    )
    def dbt_feedback_models(
        context: dg.AssetExecutionContext,
        config: DbtBuildConfig,
        dbt: DbtCliResource,
        warehouse: WarehouseResource,
    ):
        yield from _run_dbt(context, dbt, warehouse, config.evaluation_date)

    return [dbt_models, dbt_feedback_models]
