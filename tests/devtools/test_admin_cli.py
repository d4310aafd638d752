"""`imagegw keys ...` against moto: a moto server on 127.0.0.1 for --local and --endpoint-url, and
mock_aws for --stack (CloudFormation outputs)."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import boto3
import pytest
from helpers.aws import create_tables, running_moto
from moto import mock_aws
from moto.server import ThreadedMotoServer

from imagegw.accounts.admission import Accounts, Outcome
from imagegw.accounts.keys import KeyStore, hash_key
from imagegw.domain import GeneratedImage, ImageRequest, UpstreamResult
from imagegw.errors import InvalidApiKey
from imagegw_dev import admin, cli

REGION = "us-east-1"
KEYS, USAGE = "imagegw-local-KeysTable", "imagegw-local-UsageTable"


@pytest.fixture
def moto_endpoint(aws_env):
    with running_moto(ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)) as url:
        yield url


@pytest.fixture
def dynamodb(moto_endpoint):
    resource = boto3.resource("dynamodb", region_name=REGION, endpoint_url=moto_endpoint)
    create_tables(resource, {"KeysTable": KEYS, "UsageTable": USAGE})
    return resource


@pytest.fixture
def local_stack(dynamodb, moto_endpoint, tmp_path, monkeypatch):
    """A local.json as the local stack writes it, in the current directory."""
    state = tmp_path / ".imagegw"
    state.mkdir()
    (state / "local.json").write_text(
        json.dumps(
            {
                "endpoint_url": moto_endpoint,
                "region": REGION,
                "tables": {"keys": KEYS, "usage": USAGE, "jobs": "jobs", "idempotency": "idem"},
                "bucket": "bucket",
                "api_url": "http://127.0.0.1:3000/v1",
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    return dynamodb


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = admin.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def create_key(capsys, *extra: str) -> tuple[str, str]:
    code, out, _ = run(capsys, "create", "--local", "--name", "test key", *extra)
    assert code == 0
    raw = re.search(r"api_key: (sk-\S+)", out).group(1)
    key_id = re.search(r"key_id:  (key_[0-9a-f]{16})", out).group(1)
    return raw, key_id


def accounts(dynamodb) -> Accounts:
    return Accounts(KeyStore(dynamodb.Table(KEYS)), usage_table=dynamodb.Table(USAGE))


# -- create -------------------------------------------------------------------------------------------


def test_create_prints_the_raw_key_once_and_it_authenticates(local_stack, capsys):
    code, out, _ = run(capsys, "create", "--local", "--name", "billing app", "--owner", "ops")
    assert code == 0
    raws = re.findall(r"sk-[A-Za-z0-9_-]{43}", out)
    assert len(raws) == 1  # printed exactly once
    key_id = re.search(r"key_[0-9a-f]{16}", out).group(0)
    assert "shown only this once" in out
    caller = accounts(local_stack).authenticate(f"Bearer {raws[0]}")
    assert caller.key_id == key_id and caller.name == "billing app" and caller.owner == "ops"


def test_create_with_every_option(local_stack, capsys):
    code, out, _ = run(
        capsys,
        "create",
        "--local",
        "--json",
        "--name",
        "limited",
        "--models",
        "dall-e-3, gpt-image-1",
        "--quota-images",
        "5",
        "--quota-credits",
        "250.5",
        "--rate-limit",
        "10",
        "--expires-in-days",
        "30",
    )
    assert code == 0
    created = json.loads(out)
    assert "key_hash" not in created
    assert created["allowed_models"] == ["dall-e-3", "gpt-image-1"]
    assert (created["quota_images"], created["quota_credits"], created["rate_limit_per_minute"]) == (
        5,
        250.5,
        10,
    )
    assert abs(created["expires"] - (time.time() + 30 * 86400)) < 60
    caller = accounts(local_stack).authenticate(f"Bearer {created['api_key']}")
    assert caller.quota_images == 5 and caller.quota_credits == Decimal("250.5")
    assert caller.allowed_models == ["dall-e-3", "gpt-image-1"]


@pytest.mark.parametrize(
    "bad",
    [["--rate-limit", "0"], ["--quota-images", "-1"], ["--quota-credits", "nan"], ["--expires-in-days", "0"]],
)
def test_create_refuses_bad_values(local_stack, capsys, bad):
    with pytest.raises(SystemExit) as caught:
        admin.main(["create", "--local", "--name", "x", *bad])
    assert caught.value.code == 2


# -- list, show ---------------------------------------------------------------------------------------


def test_list_shows_ids_and_display_never_keys_or_hashes(local_stack, capsys):
    raw_a, id_a = create_key(capsys, "--quota-images", "3")
    raw_b, id_b = create_key(capsys, "--models", "dall-e-2")
    code, out, _ = run(capsys, "list", "--local")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split() == [
        "KEY_ID",
        "KEY",
        "NAME",
        "OWNER",
        "STATUS",
        "MODELS",
        "IMAGES",
        "CENTS",
        "RPM",
        "EXPIRES",
    ]
    assert len(rows) == 2
    assert id_a in out and id_b in out
    assert f"{raw_a[:6]}...{raw_a[-4:]}" in out
    assert "0/3" in out and "dall-e-2" in out
    for raw in (raw_a, raw_b):
        assert raw not in out
        assert hash_key(raw) not in out
    code, out, _ = run(capsys, "list", "--local", "--json")
    listed = json.loads(out)
    assert {i["key_id"] for i in listed} == {id_a, id_b}
    assert all("key_hash" not in i for i in listed)


def test_list_without_keys(local_stack, capsys):
    code, out, _ = run(capsys, "list", "--local")
    assert code == 0 and "(no keys)" in out


def test_show_one_key_with_todays_usage(local_stack, capsys):
    raw, key_id = create_key(capsys, "--quota-images", "10", "--rate-limit", "60")
    acc = accounts(local_stack)
    caller = acc.authenticate(f"Bearer {raw}")
    req = ImageRequest(
        "generations", "dall-e-3", {"prompt": "p", "n": 1, "size": "1024x1024", "quality": "hd"}
    )
    acc.settle(acc.admit(caller, req, "r1"), Outcome(200, 10, UpstreamResult([GeneratedImage(b"i")])))
    code, out, _ = run(capsys, "show", key_id, "--local")
    assert code == 0
    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.strip().splitlines())
    assert fields["key_id"] == key_id
    assert fields["status"] == "active"
    assert fields["images"] == "1/10"
    assert fields["rate limit"] == "60 requests/min"
    assert fields["today"].startswith("1 requests (0 failed), 1 images, $0.0800")
    assert raw not in out and hash_key(raw) not in out


def test_show_unknown_key_is_exit_1(local_stack, capsys):
    code, _, err = run(capsys, "show", "key_0000000000000000", "--local")
    assert code == 1
    assert "no key with id" in err


# -- revoke -------------------------------------------------------------------------------------------


def test_revoke_takes_effect_on_the_next_request(local_stack, capsys):
    raw, key_id = create_key(capsys)
    acc = accounts(local_stack)  # one long-lived instance, as in a warm Lambda container
    acc.authenticate(f"Bearer {raw}")
    code, out, _ = run(capsys, "revoke", key_id, "--local")
    assert code == 0 and "Revoked" in out and raw not in out
    with pytest.raises(InvalidApiKey):
        acc.authenticate(f"Bearer {raw}")
    _, out, _ = run(capsys, "list", "--local")
    assert "revoked" in out
    assert run(capsys, "revoke", key_id, "--local")[0] == 0  # idempotent


# -- usage --------------------------------------------------------------------------------------------


def test_usage_per_day_and_model(local_stack, capsys):
    raw, key_id = create_key(capsys)
    acc = accounts(local_stack)
    caller = acc.authenticate(f"Bearer {raw}")
    dalle = ImageRequest("generations", "dall-e-2", {"prompt": "p", "n": 2, "size": "256x256"})
    gpt = ImageRequest("edits", "gpt-image-1", {"prompt": "p", "n": 1, "size": "1024x1024", "quality": "low"})
    tokens = {"input_tokens": 100, "output_tokens": 272, "input_tokens_details": {"text_tokens": 100}}
    acc.settle(acc.admit(caller, dalle, "r1"), Outcome(200, 5, UpstreamResult([GeneratedImage(b"")] * 2)))
    acc.settle(acc.admit(caller, gpt, "r2"), Outcome(200, 5, UpstreamResult([GeneratedImage(b"")], tokens)))
    acc.settle(acc.admit(caller, dalle, "r3"), Outcome(502, 5, None, "upstream_error"))
    # dall-e-3 hd served by gpt-image-1.5 (a translation): charged $0.08, cost 272 x $32 / 1M = $0.0087
    hd = ImageRequest("generations", "dall-e-3", {"prompt": "p", "size": "1024x1024", "quality": "hd"})
    served = UpstreamResult([GeneratedImage(b"")], {"output_tokens": 272}, model="gpt-image-1.5")
    acc.settle(acc.admit(caller, hd, "r4"), Outcome(200, 5, served))

    code, out, _ = run(capsys, "usage", key_id, "--local", "--days", "3")
    assert code == 0
    lines = out.splitlines()
    total = next(line for line in lines if line.startswith("total"))
    # 4 requests, 3 ok, 1 failed, 4 images, 100 in, 544 out; charged $0.032 + (100 x 5 + 272 x 40) / 1M
    # + $0.08 = $0.12338; the upstream cost the same but $0.008704 for the translated one = $0.052084
    assert total.split() == ["total", "4", "3", "1", "4", "100", "544", "0.1234", "0.0521"]
    assert any(line.startswith("dall-e-2") for line in lines)
    assert any(line.startswith("gpt-image-1") for line in lines)
    assert next(line for line in lines if line.startswith("dall-e-3")).split()[-2:] == ["0.0800", "0.0087"]
    assert "estimates" in out and "UPSTREAM_USD" in out

    code, out, _ = run(capsys, "usage", key_id, "--local", "--json")
    report = json.loads(out)
    assert report["total"]["requests"] == 4
    assert report["total"]["cost_cents"] == pytest.approx(12.338)
    assert report["total"]["upstream_cost_cents"] == pytest.approx(5.2084)
    assert report["models"]["dall-e-2"]["failed"] == 1
    assert len(report["days"]) == 1


# -- targets ------------------------------------------------------------------------------------------


def test_explicit_tables_and_endpoint(dynamodb, moto_endpoint, capsys):
    target = [
        "--keys-table",
        KEYS,
        "--usage-table",
        USAGE,
        "--endpoint-url",
        moto_endpoint,
        "--region",
        REGION,
    ]
    code, out, _ = run(capsys, "create", "--name", "explicit", *target)
    assert code == 0
    code, out, _ = run(capsys, "list", *target)
    assert "explicit" in out


def test_through_the_imagegw_console_command(local_stack, capsys):
    capsys.readouterr()
    assert cli.main(["keys", "create", "--local", "--name", "via console"]) == 0
    assert cli.main(["keys", "list", "--local"]) == 0
    assert "via console" in capsys.readouterr().out


def test_target_is_required_and_unique(local_stack, capsys):
    assert run(capsys, "list")[0] == 2
    code, _, err = run(capsys, "list", "--local", "--keys-table", KEYS)
    assert code == 2 and "exactly one target" in err


def test_local_without_local_json(aws_env, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "list", "--local")
    assert code == 2
    assert "local.json" in err and "make dev" in err


STACK_TEMPLATE = {
    "Resources": {
        "KeysTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "key_hash", "AttributeType": "S"},
                    {"AttributeName": "key_id", "AttributeType": "S"},
                ],
                "KeySchema": [{"AttributeName": "key_hash", "KeyType": "HASH"}],
                "GlobalSecondaryIndexes": [
                    {
                        "IndexName": "by_key_id",
                        "KeySchema": [{"AttributeName": "key_id", "KeyType": "HASH"}],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
            },
        },
        "UsageTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
            },
        },
    },
    "Outputs": {
        "KeysTableName": {"Value": {"Ref": "KeysTable"}},
        "UsageTableName": {"Value": {"Ref": "UsageTable"}},
    },
}


def test_stack_target_reads_cloudformation_outputs(aws_env, capsys):
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name="eu-west-1")
        cloudformation.create_stack(StackName="imagegw", TemplateBody=json.dumps(STACK_TEMPLATE))
        outputs = {
            o["OutputKey"]: o["OutputValue"]
            for o in cloudformation.describe_stacks(StackName="imagegw")["Stacks"][0]["Outputs"]
        }
        code, out, _ = run(capsys, "create", "--stack", "imagegw", "--region", "eu-west-1", "--name", "prod")
        assert code == 0
        raw = re.search(r"api_key: (sk-\S+)", out).group(1)
        keys_table = boto3.resource("dynamodb", region_name="eu-west-1").Table(outputs["KeysTableName"])
        assert keys_table.get_item(Key={"key_hash": hash_key(raw)})["Item"]["name"] == "prod"
        key_id = re.search(r"key_[0-9a-f]{16}", out).group(0)
        code, out, _ = run(capsys, "usage", key_id, "--stack", "imagegw", "--region", "eu-west-1")
        assert code == 0 and "total" in out
        code, _, err = run(capsys, "list", "--stack", "nope", "--region", "eu-west-1")
        assert code == 2 and "nope" in err


def test_stack_target_needs_the_stacks_region_said_explicitly(aws_env, monkeypatch, capsys):
    # AWS_DEFAULT_REGION (or a config file's region) is the shell's default, not the stack's.
    monkeypatch.delenv("AWS_REGION", raising=False)
    code, _, err = run(capsys, "list", "--stack", "imagegw")
    assert code == 2 and "--region" in err
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name="eu-west-1")
        stack_id = cloudformation.create_stack(StackName="imagegw", TemplateBody=json.dumps(STACK_TEMPLATE))[
            "StackId"
        ]
        assert stack_id.startswith("arn:aws:cloudformation:eu-west-1:")
        code, out, _ = run(capsys, "create", "--stack", stack_id, "--name", "by arn")
        assert code == 0 and "in eu-west-1" in out
        monkeypatch.setenv("AWS_REGION", "eu-west-1")
        code, out, _ = run(capsys, "list", "--stack", "imagegw")
        assert code == 0 and "by arn" in out
        code, _, err = run(capsys, "list", "--stack", stack_id, "--region", "us-east-1")
        assert code == 2 and "differs" in err
