"""Every provider type a routes document may name, and the factory that builds it. One line per type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from imagegw.upstream.providers import AzureOpenAIProvider, OpenAIProvider, ProviderFactory

if TYPE_CHECKING:
    from imagegw.upstream.bedrock import BedrockProvider
    from imagegw.upstream.config import ProviderConfig
    from imagegw.upstream.providers import ProviderContext


def create_bedrock(config: ProviderConfig, context: ProviderContext) -> BedrockProvider:
    """The Bedrock provider, loaded when a routes document names one: not at cold start otherwise."""
    from imagegw.upstream.bedrock import BedrockProvider

    return BedrockProvider.create(config, context)


PROVIDER_TYPES: Mapping[str, ProviderFactory] = {
    "openai": OpenAIProvider.create,
    "azure": AzureOpenAIProvider.create,
    "bedrock": create_bedrock,
}
