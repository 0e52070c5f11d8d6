"""The campaign report as an asset: the HTML file `hub report` writes, key charts as metadata."""

from pathlib import Path

import dagster as dg

from connectors.warehouse.database import state_dir
from pipelines.report import chart_markdown, write_report
from pipelines.resources import WarehouseResource

REPORT_INPUTS = [
    dg.AssetKey(["marts", "segment_catalog"]),
    dg.AssetKey(["marts", "audience_membership"]),
    dg.AssetKey(["marts", "audience_exclusions"]),
    dg.AssetKey(["marts", "agg_engagement_by_audience"]),
    dg.AssetKey(["marts", "fct_email_events"]),
    dg.AssetKey(["marts", "journey_step_metrics"]),
]
KEY_CHARTS = ("Campaign funnels", "Segment sizes and exclusions", "Journey drop-off")


class ReportConfig(dg.Config):
    path: str = ""  # empty: <state folder>/reports/campaign_report.html


@dg.asset(
    group_name="report",
    deps=REPORT_INPUTS,
    description="Self-contained HTML campaign report (funnels, engagement, segments, journeys).",
)
def campaign_report(config: ReportConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
    path = Path(config.path) if config.path else state_dir() / "reports" / "campaign_report.html"
    with warehouse.warehouse().connect() as conn:
        report = write_report(conn, path)
    charts = {
        section.title: dg.MetadataValue.md(chart_markdown(section.chart, section.title))
        for section in report.sections
        if section.title in KEY_CHARTS
    }
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(path)), "charts": report.charts, **charts}
    )
