"""Builds the service from validated settings: the one place that creates AWS clients."""

from __future__ import annotations

from functools import cache

import boto3

from .accounts import Accounts
from .catalog import Catalog
from .service import ImageService
from .settings import Settings
from .storage import S3ImageStore
from .upstream import build_router


@cache
def boto_session() -> boto3.session.Session:
    return boto3.session.Session()


def build_service(settings: Settings) -> ImageService:
    """Create clients and adapters; makes no AWS call itself (routes and secrets load on first use)."""
    session = boto_session()
    catalog = Catalog.load()
    dynamodb = session.resource("dynamodb")
    return ImageService(
        settings=settings,
        catalog=catalog,
        accounts=Accounts.from_settings(settings, dynamodb),
        router=build_router(
            settings,
            catalog,
            secrets_client=session.client("secretsmanager"),
            ssm_client=session.client("ssm"),
        ),
        store=S3ImageStore(session.client("s3"), settings.bucket, settings.url_ttl_seconds),
    )
