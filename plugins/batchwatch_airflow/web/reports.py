"""The stored per-window drift reports, served behind Airflow's auth.

The drift check writes each window's report under the artifact store; this route only reads it back.
The path is built from the model's spec name and a window parsed as `YYYYMMDDTHHMMZ`, never from the
request's text, so no request can name another file.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from batchwatch.errors import InvalidArgument
from batchwatch.monitoring.report import parse_window_key, report_relpath
from batchwatch.registry import artifact_root
from batchwatch_airflow.web.security import ReadableModel

router = APIRouter(tags=["Batchwatch reports"], include_in_schema=False)


@router.get("/models/{model_name}/reports/drift/{window}", response_class=FileResponse)
def drift_report(spec: ReadableModel, window: str) -> FileResponse:
    """The drift report of the window ending at `window` (UTC, e.g. 20261103T0000Z): 404 until a check has written it."""
    try:
        window_end = parse_window_key(window)
    except InvalidArgument as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    path = artifact_root() / report_relpath(spec.name, window_end)
    if not path.is_file():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no drift report of {spec.name} for the window ending {window_end:%Y-%m-%d %H:%M} UTC; "
            f"the {spec.name}_hourly_drift run of that window writes it",
        )
    return FileResponse(path, media_type="text/html; charset=utf-8")
