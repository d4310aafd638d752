"""Every provider type a routes document may name, and the factory that builds it. One line per type."""

from __future__ import annotations

from collections.abc import Mapping

from imagegw.upstream.bedrock import BedrockProvider
from imagegw.upstream.providers import AzureOpenAIProvider, OpenAIProvider, ProviderFactory

PROVIDER_TYPES: Mapping[str, ProviderFactory] = {
    "openai": OpenAIProvider.create,
    "azure": AzureOpenAIProvider.create,
    "bedrock": BedrockProvider.create,
}
