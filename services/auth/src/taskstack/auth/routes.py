"""The auth service's public routes, under /v1/auth."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1/auth", tags=["auth"])
