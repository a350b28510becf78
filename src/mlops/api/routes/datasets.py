"""Training dataset endpoints: list, create, show, download (parquet or CSV, streamed)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from mlops.api.deps import Researcher, SettingsDep, read_access
from mlops.api.errors import READ_ERRORS, WRITE_ERRORS
from mlops.features import datasets

router = APIRouter(tags=["datasets"], dependencies=[Depends(read_access)], responses=READ_ERRORS)


@router.get("/datasets", response_model=list[datasets.DatasetInfo])
def list_datasets(settings: SettingsDep) -> list[datasets.DatasetInfo]:
    return datasets.list_datasets(settings)


@router.post(
    "/datasets", responses=WRITE_ERRORS, response_model=datasets.DatasetInfo, status_code=201
)
async def create_dataset(
    body: datasets.DatasetRequest, settings: SettingsDep, caller: Researcher
) -> datasets.DatasetInfo:
    """Build a point-in-time correct training dataset from features, tickers and a range."""
    return await run_in_threadpool(datasets.create_dataset, settings, body, caller.name)


@router.get("/datasets/{name}", response_model=datasets.DatasetInfo)
def get_dataset(name: str, settings: SettingsDep) -> datasets.DatasetInfo:
    return datasets.get_dataset(settings, name)[0]


@router.get(
    "/datasets/{name}/download",
    response_class=FileResponse,
    response_model=None,
    responses={
        200: {
            "description": "The rows as a parquet file or CSV text.",
            "content": {"application/vnd.apache.parquet": {}, "text/csv": {}},
        }
    },
)
def download_dataset(
    name: str,
    settings: SettingsDep,
    format: Annotated[Literal["parquet", "csv"], Query()] = "parquet",
) -> FileResponse | StreamingResponse:
    """The dataset's rows as parquet (file) or CSV (streamed in batches)."""
    _, path = datasets.get_dataset(settings, name)
    if format == "csv":
        return StreamingResponse(
            datasets.iter_csv(path),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return FileResponse(
        path, media_type="application/vnd.apache.parquet", filename=f"{name}.parquet"
    )
