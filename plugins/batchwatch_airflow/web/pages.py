"""The Batchwatch page: HTML over the typed read models (`batchwatch.queries`), shown in Airflow's nav.

A model's page is a list of panels. A panel is a template under `templates/panels/` and a loader
that calls one query; adding one is a template and a line in
`PANELS`. Every route depends on `ReadableModels` or `ReadableModel`, so Airflow's login and the
user's DAG permissions apply to the page as they do to the JSON API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine

from batchwatch import queries
from batchwatch.spec import ModelSpec
from batchwatch_airflow.links import URL_PREFIX
from batchwatch_airflow.web import charts
from batchwatch_airflow.web.security import JOBS, ReadableModel, ReadableModels, WarehouseDep

HERE = Path(__file__).parent
STATIC = HERE / "static"

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals.update(line_chart=charts.line_chart, density_chart=charts.density_chart, drift_heatmap=charts.drift_heatmap,
                             current_against_reference=charts.current_against_reference, category_shares=charts.category_shares,
                             performance_chart=charts.performance_chart, volume_chart=charts.volume_chart,
                             release_interval=charts.release_interval)
router = APIRouter(tags=["Batchwatch pages"], include_in_schema=False)


@dataclass(frozen=True)
class LastRun:
    """A job's latest Airflow run, linked from the overview."""

    job: str
    dag_id: str
    run_id: str | None
    state: str | None
    run_after: datetime | None
    end_date: datetime | None


@dataclass(frozen=True)
class PanelContext:
    engine: Engine
    model: ModelSpec


@dataclass(frozen=True)
class Panel:
    """One section of a model's page: `templates/panels/<key>.html` renders what `load` returns as `data`."""

    key: str
    title: str
    load: Callable[[PanelContext], Any]


PANELS: list[Panel] = [
    Panel("overview", "Overview", lambda c: queries.model_overview(c.engine, c.model.name)),
    Panel("incidents", "Alerts", lambda c: queries.incidents(c.engine, c.model.name)),
    Panel("release", "Release", lambda c: queries.release_history(c.engine, c.model.name)),
    Panel("release_decisions", "Release decisions", lambda c: queries.release_decisions(c.engine, c.model.name)),
    Panel("performance", "Performance, realized and estimated (60 days)", lambda c: queries.performance(c.engine, c.model.name, days=60)),
    Panel("drift", "Drift, check × window (30 days)", lambda c: queries.drift_heatmap(c.engine, c.model.name, days=30)),
    Panel("volume", "Predictions over time", lambda c: queries.prediction_volume(c.engine, c.model.name, days=30)),
    Panel("volume_checks", "Volume and freshness (60 days)", lambda c: queries.volume_checks(c.engine, c.model.name, days=60)),
    Panel("versions", "Versions and lineage", lambda c: queries.versions(c.engine, c.model.name)),
    Panel("aliases", "Alias history", lambda c: queries.alias_history(c.engine, c.model.name)),
    Panel("promotions", "Promotion decisions", lambda c: queries.promotion_decisions(c.engine, c.model.name)),
    Panel("chaos_drill", "Chaos drill of the monitors", lambda c: queries.latest_drill(c.engine, c.model.name)),
]


def airflow_root(request: Request) -> str:
    """Airflow's UI root as this request sees it (the app is mounted at URL_PREFIX), for links to runs."""
    return str(request.scope.get("root_path", "")).removesuffix(URL_PREFIX)


def page_root(request: Request) -> str:
    return airflow_root(request) + URL_PREFIX


def last_runs(model_name: str) -> list[LastRun]:
    """Each job's latest run from Airflow's metadata database: the page links to it and shows its outcome."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    runs = []
    with create_session() as session:
        for job in JOBS:
            dag_id = f"{model_name}_{job}"
            run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).limit(1)).first()
            runs.append(
                LastRun(job, dag_id, run.run_id if run else None, str(run.state) if run else None, run.run_after if run else None,
                        run.end_date if run else None)
            )
    return runs


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"root": page_root(request), "airflow": airflow_root(request), **context}
    )


@router.get("/", response_class=HTMLResponse)
def index(request: Request, models: ReadableModels, engine: WarehouseDep) -> HTMLResponse:
    """The models this user may read, each with its champion and open incidents."""
    overviews = [(model, queries.model_overview(engine, model.name)) for model in models]
    return _render(request, "index.html", overviews=overviews)


@router.get("/models/{model_name}", response_class=HTMLResponse)
def model_page(
    request: Request,
    model: ReadableModel,
    engine: WarehouseDep,
    dag_id: Annotated[str | None, Query(max_length=250)] = None,
    run_id: Annotated[str | None, Query(max_length=250)] = None,
) -> HTMLResponse:
    """Every panel of one model; `dag_id`/`run_id` name the run someone came from (the task's extra link)."""
    context = PanelContext(engine, model)
    panels = [(panel, panel.load(context)) for panel in PANELS]
    came_from = {"dag_id": dag_id, "run_id": run_id} if dag_id and run_id else None
    return _render(request, "model.html", model=model, panels=panels, runs=last_runs(model.name), came_from=came_from)


@router.get("/models/{model_name}/drift", response_class=HTMLResponse)
def drift_check_page(
    request: Request,
    model: ReadableModel,
    engine: WarehouseDep,
    window_end: datetime,
    column: Annotated[str, Query(min_length=1, max_length=200)],
    test: Annotated[str, Query(min_length=1, max_length=100)],
) -> HTMLResponse:
    """One check of one window: reference against current, the statistics, p raw and adjusted, effect and threshold, n."""
    if window_end.tzinfo is None:
        raise HTTPException(422, f"window_end {window_end.isoformat()} has no timezone; give it in UTC, e.g. 2026-11-26T00:00:00+00:00")
    try:
        check = queries.drift_check(engine, model.name, window_end=window_end, column=column, test=test)
    except queries.NotFound as error:
        raise HTTPException(404, str(error)) from error
    return _render(request, "drift_check.html", model=model, check=check)


@router.get("/static/{name}")
def static(name: str, models: ReadableModels) -> FileResponse:
    """The page's stylesheet; behind the same login as the pages it styles."""
    path = STATIC / name
    if path.parent != STATIC or not path.is_file():
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path)
