"""Upstream credentials from the Secrets Manager secret (moto): cached, re-read after a 401, never named."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from imagegw.upstream import Credentials, RouteFault


@mock_aws
def test_credentials_come_from_the_secret_and_are_cached():
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    sm.create_secret(
        Name="imagegw/upstream",
        SecretString=json.dumps({"openai": {"api_key": "sk-one"}, "plain": "sk-plain"}),
    )
    creds = Credentials("imagegw/upstream", secrets_client=sm)
    assert creds.api_key("openai") == "sk-one"
    assert creds.api_key("plain") == "sk-plain"
    assert creds.api_key(None) is None
    sm.put_secret_value(
        SecretId="imagegw/upstream", SecretString=json.dumps({"openai": {"api_key": "sk-two"}})
    )
    assert creds.api_key("openai") == "sk-one"  # cached (max_age 5 minutes)
    creds.invalidate()  # after an upstream 401: re-read
    assert creds.api_key("openai") == "sk-two"


@mock_aws
def test_a_missing_credential_or_secret_is_a_route_fault_naming_neither():
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    sm.create_secret(Name="imagegw/upstream", SecretString=json.dumps({"openai": {"api_key": "sk-one"}}))
    with pytest.raises(RouteFault) as info:
        Credentials("imagegw/upstream", secrets_client=sm).api_key("azure")
    assert "azure" not in info.value.message
    with pytest.raises(RouteFault) as info:
        Credentials("arn:aws:secretsmanager:us-east-1:1:secret:nope", secrets_client=sm).api_key("openai")
    assert "nope" not in info.value.message and "arn:" not in info.value.message
    sm.create_secret(Name="not-json", SecretString="sk-raw")
    with pytest.raises(RouteFault):
        Credentials("not-json", secrets_client=sm).api_key("openai")


def test_without_a_secret_no_provider_gets_a_key():
    creds = Credentials("")
    assert not creds.configured
    assert creds.api_key("openai") is None and creds.api_key(None) is None
