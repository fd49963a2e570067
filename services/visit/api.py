"""Visit's HTTP routes arrive with its domain; the service already serves health and metrics."""

from fastapi import APIRouter

router = APIRouter(tags=["visit"])
