"""The tasks service's public routes, under /v1/tasks."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
