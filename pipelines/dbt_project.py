"""The dbt project, wired once: a cached factory and a translator shared by every dbt asset."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from dagster_dbt import DagsterDbtTranslator, DbtProject

REPO_ROOT = Path(__file__).resolve().parent.parent


def dbt_project_dir() -> Path:
    return Path(os.environ.get("HUB_DBT_PROJECT_DIR", REPO_ROOT / "dbt_project")).resolve()


@cache
def dbt_project() -> DbtProject:
    """The DbtProject, with its manifest parsed on first use if it is missing."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    project_dir = dbt_project_dir()
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    if _manifest_is_stale(project.manifest_path, project_dir):
        parse_project(project_dir)
    return project


# What dbt reads to build its manifest; a newer file here means the manifest is out of date.
_PROJECT_SOURCES = ("models", "macros", "tests", "seeds", "snapshots", "analyses")
_PROJECT_FILES = ("dbt_project.yml", "profiles.yml")


def _manifest_is_stale(manifest: Path, project_dir: Path) -> bool:
    """True when the manifest is missing or older than any project file (a model was edited)."""
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    files = [project_dir / name for name in _PROJECT_FILES]
    for folder in _PROJECT_SOURCES:
        files.extend(p for p in (project_dir / folder).rglob("*") if p.is_file())
    return any(f.exists() and f.stat().st_mtime > built for f in files)


def parse_project(project_dir: Path) -> None:
    """`dbt parse`, in process: writes target/manifest.json without touching the database."""
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(
        ["parse", "--quiet", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir)]
    )
    if not result.success:
        raise RuntimeError(f"dbt parse failed for {project_dir}: {result.exception}")


class HubDbtTranslator(DagsterDbtTranslator):
    """Groups dbt assets by layer folder (staging, intermediate, marts, ...)."""

    def get_group_name(self, dbt_resource_props):
        if dbt_resource_props["resource_type"] != "model":
            return super().get_group_name(dbt_resource_props)
        parts = dbt_resource_props.get("fqn", [])
        layer = parts[1] if len(parts) > 2 else "dbt"
        return f"dbt_{layer}"
