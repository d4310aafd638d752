"""Upstream API keys from one Secrets Manager secret, read with Powertools parameters and cached.

The secret's JSON maps credential names (a provider's `credential` in the routes) to objects:

    {"openai": {"api_key": "sk-..."}, "azure-eastus": {"api_key": "..."}}

With no secret configured (`settings.upstream_secret_id` empty), no provider gets a key: an upstream that
needs none (a private gateway, the emulator without a key) still works; one that needs a key answers 401.
"""

from __future__ import annotations

from typing import Any

from imagegw.observability import logger
from imagegw.upstream.failures import RouteFault

DEFAULT_MAX_AGE_S = 300


class Credentials:
    def __init__(
        self, secret_id: str, *, secrets_client: Any = None, max_age: int = DEFAULT_MAX_AGE_S
    ) -> None:
        self.secret_id = secret_id.strip()
        self._client = secrets_client
        self._provider: Any = None
        self._max_age = max_age
        self._force = False
        self._warned: set[str] = set()

    @property
    def configured(self) -> bool:
        return bool(self.secret_id)

    def api_key(self, name: str | None) -> str | None:
        """The key for a credential name; None when the provider needs none or no secret is configured.

        RouteFault when a secret is configured but cannot be read or lacks the name: that route is
        unusable (the router fails over), and nothing about the secret reaches the client.
        """
        if not name:
            return None
        if not self.secret_id:
            if name not in self._warned:
                self._warned.add(name)
                logger.warning(
                    "upstream credential named but no upstream secret configured; calling without a key",
                    extra={"credential": name},
                )
            return None
        document = self._document()
        entry = document.get(name)
        key = entry.get("api_key") if isinstance(entry, dict) else entry
        if not isinstance(key, str) or not key:
            logger.error("upstream credential missing from the upstream secret", extra={"credential": name})
            raise RouteFault("A credential of this route is not configured.")
        return key

    def invalidate(self) -> None:
        """Re-read the secret on next use (after an upstream refused a key: it may have been rotated)."""
        self._force = True

    def _document(self) -> dict[str, Any]:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        if self._provider is None:
            self._provider = SecretsProvider(boto3_client=self._client)
        force, self._force = self._force, False
        try:
            value = self._provider.get(
                self.secret_id, max_age=self._max_age, transform="json", force_fetch=force
            )
        except Exception as exc:  # GetParameterError, TransformParameterError: messages name the secret
            logger.error("could not read the upstream secret", extra={"error": type(exc).__name__})
            raise RouteFault("The upstream credentials could not be read.") from None
        if not isinstance(value, dict):
            logger.error("the upstream secret is not a JSON object")
            raise RouteFault("The upstream credentials are malformed.")
        return value
