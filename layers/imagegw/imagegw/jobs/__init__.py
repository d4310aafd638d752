"""Asynchronous image jobs: SQS messages (`schema`), the job record (`store`), the HTTP side
(`frontend`: `Prefer: respond-async` submissions and `GET /v1/images/jobs/{id}`) and the SQS worker
(`worker`). See docs/jobs.md for the message schema.

This module imports nothing on purpose: `service` imports `jobs.frontend`, and `jobs.worker` imports
`service`.
"""
