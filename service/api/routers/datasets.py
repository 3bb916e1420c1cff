"""The shipped data sets (``service.datasets``), one image at a time: what the dashboard steps through."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from polycert import datasets, reports
from polycert.api.schemas import DatasetInfo, DatasetList, DatasetSample

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("", response_model=DatasetList)
def list_datasets() -> DatasetList:
    data = [DatasetInfo(**d) for d in datasets.catalogue()]
    return DatasetList(count=len(data), data=data)


@router.get("/{name}/{index}", response_model=DatasetSample)
def sample(name: str, index: int, split: Literal["train", "test"] = "test") -> DatasetSample:
    """Image ``index`` of the set: its input (grey / 255, row-major) and label; 404 outside the set."""
    x, label, count = datasets.sample(name, index, split)
    return DatasetSample(name=name, split=split, index=index, count=count, label=label,
                         image_side=reports.image_side(x.size), input=x.tolist())
