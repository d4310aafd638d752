"""Builds the service from validated settings: the one place that creates AWS clients."""

from __future__ import annotations

import random
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3

from imagegw.accounts.admission import Accounts
from imagegw.delivery.storage import S3ImageStore
from imagegw.request.catalog import Catalog
from imagegw.service import ImageService
from imagegw.settings import Settings
from imagegw.upstream import build_router

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from imagegw.jobs.submission import AsyncJobs
    from imagegw.jobs.worker import JobWorker
    from imagegw.model_listing import ModelListing


def register_snapstart_hooks() -> bool:
    """Runtime hooks for Lambda SnapStart (template parameter SnapStart): many execution environments
    resume from one snapshot taken after init, so whatever init made is shared by all of them.

    The snapshot holds imports and validated settings only: clients, connection pools and credentials are
    made by `build_service` on the first request after a restore, so each environment opens its own
    connections. What init does share is the `random` module's state (route weights and retry jitter
    draw from it): reseeded from os.urandom after each restore. Ids and keys use `secrets` or uuid4
    (os.urandom), fresh in every environment. False where the hook library is absent (not Lambda)."""
    try:
        from snapshot_restore_py import register_after_restore  # in Lambda's Python managed runtimes
    except ImportError:
        return False
    register_after_restore(random.seed)
    return True


register_snapstart_hooks()  # at import, during init: hooks registered later are not run


@cache
def boto_session() -> boto3.session.Session:
    return boto3.session.Session()


def build_service(settings: Settings) -> ImageService:
    """Create clients and adapters; makes no AWS call itself (routes and secrets load on first use)."""
    session = boto_session()
    catalog = Catalog.load()
    dynamodb = session.resource("dynamodb")
    store = S3ImageStore(session.client("s3"), settings.bucket, settings.url_ttl_seconds)
    return ImageService(
        settings=settings,
        catalog=catalog,
        accounts=Accounts.from_settings(settings, dynamodb),
        upstream=build_router(
            settings,
            catalog,
            secrets_client=session.client("secretsmanager"),
            ssm_client=session.client("ssm"),
        ),
        store=store,
        jobs=build_async_jobs(settings, catalog, store),
    )


def build_model_listing(settings: Settings) -> ModelListing:
    """GET /v1/models: the catalog, the key table (authentication only) and the routes document."""
    from imagegw.model_listing import ModelListing
    from imagegw.upstream import PROVIDER_TYPES
    from imagegw.upstream.config import RoutesSource

    session = boto_session()
    source = RoutesSource(settings.routes_source, PROVIDER_TYPES, ssm_client=session.client("ssm"))
    return ModelListing(
        Catalog.load(), Accounts.from_settings(settings, session.resource("dynamodb")), source.get
    )


def build_async_jobs(settings: Settings, catalog: Catalog, store: S3ImageStore) -> AsyncJobs:
    from imagegw.jobs.store import JobStore
    from imagegw.jobs.submission import AsyncJobs

    session = boto_session()
    return AsyncJobs(
        jobs=JobStore(session.resource("dynamodb").Table(settings.jobs_table), settings.jobs_ttl_seconds),
        store=store,
        sqs_client=session.client("sqs"),
        queue_url=settings.jobs_queue_url,
        catalog=catalog,
    )


def build_worker(settings: Settings) -> JobWorker:
    """The SQS jobs worker: the same service as the API, plus the job, key and idempotency tables."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from imagegw.accounts.keys import KeyStore
    from imagegw.jobs.store import CallerLookup, JobStore
    from imagegw.jobs.worker import JobWorker

    session = boto_session()
    dynamodb = session.resource("dynamodb")
    return JobWorker(
        service=build_service(settings),
        jobs=JobStore(dynamodb.Table(settings.jobs_table), settings.jobs_ttl_seconds),
        callers=CallerLookup(KeyStore(dynamodb.Table(settings.keys_table))),
        s3_client=session.client("s3"),
        bucket=settings.bucket,
        sqs_client=session.client("sqs"),
        persistence_store=DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, boto3_client=session.client("dynamodb")
        ),
        max_receive_count=settings.jobs_max_receive_count,
        idempotency_expires_seconds=settings.jobs_ttl_seconds,
    )


class LazyWorker:
    """The worker a handler module holds: settings validated at import (cold start), clients made on
    the first record, so importing the handler makes no AWS call."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._worker: JobWorker | None = None

    def process_record(self, record: SQSRecord, lambda_context: Any = None) -> dict[str, Any]:
        if self._worker is None:
            self._worker = build_worker(self._settings)
        return self._worker.process_record(record, lambda_context)


def worker_from_env() -> LazyWorker:
    return LazyWorker(Settings.from_env())
