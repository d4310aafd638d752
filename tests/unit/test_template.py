"""template.yaml agrees with the code: settings, handlers, key schemas, limits and the layer's dependencies.

`sam validate --lint`, `sam build` and checkov check the template against AWS; these tests check it against
this repository, without any AWS call.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from imagegw.settings import Settings, all_env_names, env_name, required_env_names
from imagegw_dev.template import function_properties, load_template, resources

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
PARAMETERS: dict[str, Any] = TEMPLATE["Parameters"]
FUNCTIONS = resources(TEMPLATE, "AWS::Serverless::Function")
TABLES = resources(TEMPLATE, "AWS::DynamoDB::Table")
QUEUES = resources(TEMPLATE, "AWS::SQS::Queue")

API_ROUTES = {
    "GenerationsFunction": ("generations", "post", "/v1/images/generations"),
    "EditsFunction": ("edits", "post", "/v1/images/edits"),
    "VariationsFunction": ("variations", "post", "/v1/images/variations"),
    "JobStatusFunction": ("job_status", "get", "/v1/images/jobs/{job_id}"),
    "ModelsFunction": ("models", "get", "/v1/models"),
}
MORE_API_ROUTES = {"ModelsFunction": [("get", "/v1/models/{model}")]}
CODE_DIRS = {**{name: route[0] for name, route in API_ROUTES.items()}, "JobsWorkerFunction": "jobs_worker"}


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def test_the_template_declares_exactly_the_expected_functions():
    assert set(FUNCTIONS) == set(CODE_DIRS)


@pytest.mark.parametrize("name", sorted(CODE_DIRS))
def test_every_function_sets_every_setting_and_no_other(name):
    env = function_properties(TEMPLATE, name)["Environment"]["Variables"]
    imagegw_vars = {key for key in env if key.startswith("IMAGEGW_")}
    assert imagegw_vars == set(all_env_names())
    assert env["POWERTOOLS_SERVICE_NAME"] == "imagegw"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "imagegw"
    assert env["LOG_LEVEL"] == ref("LogLevel")


def test_required_settings_name_resources_of_this_stack():
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    for name in required_env_names():
        value = env[name]
        if "Fn::If" in value:  # a retained table a redeploy takes over: ExistingKeysTableName and the like
            condition, created, existing = value["Fn::If"]
            assert TEMPLATE["Resources"][created["Ref"]]["Condition"] == condition, name
            assert existing["Ref"] in PARAMETERS, name
            value = created
        assert isinstance(value, dict) and set(value) == {"Ref"}, name
        assert value["Ref"] in TEMPLATE["Resources"], f"{name} must reference a resource, not a parameter"


def test_parameter_defaults_are_the_code_defaults():
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    checked = 0
    for field in dataclasses.fields(Settings):
        value = env[env_name(field.name)]
        if field.default is dataclasses.MISSING or set(value) != {"Ref"}:
            continue  # required (a resource) or derived (IMAGEGW_SYNC_DEADLINE_SECONDS)
        parameter = PARAMETERS[value["Ref"]]
        if "Default" not in parameter:
            continue  # a required parameter (UpstreamSecretArn)
        default = parameter["Default"]
        if isinstance(field.default, bool):
            default = {"true": True, "false": False}[default]
        assert default == field.default, f"{value['Ref']} default {default!r} != Settings.{field.name}"
        checked += 1
    assert checked >= 8


def test_the_sync_deadline_is_the_api_timeout_less_a_margin_for_every_allowed_timeout():
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert env["IMAGEGW_SYNC_DEADLINE_SECONDS"] == {
        "Fn::FindInMap": ["ApiTimeouts", ref("ApiTimeoutMs"), "SyncDeadlineSeconds"]
    }
    mapping = TEMPLATE["Mappings"]["ApiTimeouts"]
    allowed = [str(v) for v in PARAMETERS["ApiTimeoutMs"]["AllowedValues"]]
    assert sorted(mapping, key=int) == sorted(allowed, key=int)
    for ms, row in mapping.items():
        assert float(row["SyncDeadlineSeconds"]) == pytest.approx(int(ms) / 1000 - 1.5)
        # The API functions' timeout comes from the same row: they outlive the integration timeout.
        assert int(ms) / 1000 < row["FunctionTimeout"] <= 900


@pytest.mark.parametrize("name", sorted(CODE_DIRS))
def test_handlers_and_code_dirs_exist(name):
    props = function_properties(TEMPLATE, name)
    assert props["CodeUri"].rstrip("/") == f"functions/{CODE_DIRS[name]}"
    # The handler is on the function itself (the local stack reads it there).
    assert FUNCTIONS[name]["Handler"] == "app.lambda_handler"
    module, _, attribute = props["Handler"].rpartition(".")
    source = ROOT / props["CodeUri"] / f"{module}.py"
    assert source.is_file(), f"{source} is missing"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    defined |= {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    assert attribute in defined, f"{source} defines no {attribute}"
    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["arm64"]
    assert ref("ImagegwLayer") in props["Layers"]
    assert not (ROOT / props["CodeUri"] / "requirements.txt").exists(), "dependencies belong in the layer"


@pytest.mark.parametrize("name", sorted(API_ROUTES))
def test_api_routes(name):
    _, method, path = API_ROUTES[name]
    props = function_properties(TEMPLATE, name)
    events = list(props["Events"].values())
    assert {event["Type"] for event in events} == {"Api"}
    served = [e["Properties"] for e in events if e["Properties"]["Method"] != "options"]
    assert [(s["Method"], s["Path"]) for s in served] == [(method, path), *MORE_API_ROUTES.get(name, [])]
    for spec in served:
        assert spec["RestApiId"] == ref("ImagegwApi")
        assert spec["TimeoutInMillis"] == ref("ApiTimeoutMs")
    # CORS: the function answers the preflight of each of its paths (for the allowed origins only).
    preflights = [e["Properties"] for e in events if e["Properties"]["Method"] == "options"]
    assert sorted(p["Path"] for p in preflights) == sorted(s["Path"] for s in served)
    assert all(p["RestApiId"] == ref("ImagegwApi") for p in preflights)
    assert props["Timeout"] == {"Fn::FindInMap": ["ApiTimeouts", ref("ApiTimeoutMs"), "FunctionTimeout"]}
    assert props["MemorySize"] == ref("ApiFunctionMemory")


def test_the_worker_consumes_the_jobs_queue_with_partial_batch_responses():
    props = function_properties(TEMPLATE, "JobsWorkerFunction")
    (event,) = props["Events"].values()
    assert event["Type"] == "SQS"
    spec = event["Properties"]
    assert spec["Queue"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    assert spec["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert spec["BatchSize"] == ref("JobsBatchSize")
    assert PARAMETERS["JobsBatchSize"]["Default"] == 1  # jobs in a batch run one after another
    assert props["Timeout"] == ref("WorkerTimeout")


@pytest.mark.parametrize(
    ("table", "key_schema"),
    [
        ("KeysTable", {"key_hash": "HASH"}),
        ("UsageTable", {"pk": "HASH", "sk": "RANGE"}),
        ("JobsTable", {"job_id": "HASH"}),
        ("IdempotencyTable", {"id": "HASH"}),
    ],
)
def test_table_key_schemas_and_settings(table, key_schema):
    props = TABLES[table]
    assert {k["AttributeName"]: k["KeyType"] for k in props["KeySchema"]} == key_schema
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert all(types[name] == "S" for name in key_schema)
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True


def test_the_keys_table_has_the_key_id_index():
    (index,) = TABLES["KeysTable"]["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_key_id"
    assert index["KeySchema"] == [{"AttributeName": "key_id", "KeyType": "HASH"}]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    types = {a["AttributeName"]: a["AttributeType"] for a in TABLES["KeysTable"]["AttributeDefinitions"]}
    assert types["key_id"] == "S"


@pytest.mark.parametrize(
    ("table", "attribute"),
    [("UsageTable", "expires_at"), ("JobsTable", "expires_at"), ("IdempotencyTable", "expiration")],
)
def test_ttl_attributes(table, attribute):
    assert TABLES[table]["TimeToLiveSpecification"] == {"AttributeName": attribute, "Enabled": True}


def test_the_jobs_queue_takes_1_mib_messages_and_redrives_to_the_dead_letter_queue():
    queue = QUEUES["JobsQueue"]
    assert queue["MaximumMessageSize"] == 1048576
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": ref("JobsMaxReceiveCount"),
    }
    assert PARAMETERS["JobsMaxReceiveCount"]["Default"] == 3
    assert QUEUES["JobsDeadLetterQueue"]["SqsManagedSseEnabled"] is True


def test_the_visibility_timeout_is_six_times_the_worker_timeout_for_every_allowed_timeout():
    assert QUEUES["JobsQueue"]["VisibilityTimeout"] == {
        "Fn::FindInMap": ["WorkerTimeouts", ref("WorkerTimeout"), "QueueVisibilityTimeout"]
    }
    mapping = TEMPLATE["Mappings"]["WorkerTimeouts"]
    allowed = PARAMETERS["WorkerTimeout"]["AllowedValues"]
    assert sorted(int(k) for k in mapping) == sorted(int(v) for v in allowed)
    for seconds, row in mapping.items():
        assert row["QueueVisibilityTimeout"] >= 6 * int(seconds)
        assert row["QueueVisibilityTimeout"] <= 43200  # the SQS maximum


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def test_the_layer_ships_the_runtime_dependencies_of_pyproject_minus_boto3():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = _requirements(pyproject["project"]["dependencies"])
    wanted.pop("boto3")
    layer = _requirements((ROOT / "layers/imagegw/requirements.txt").read_text(encoding="utf-8").splitlines())
    assert set(layer) == set(wanted)
    for name, requirement in wanted.items():
        assert layer[name].specifier == requirement.specifier, name
        # The layer may add extras only Lambda needs (powertools[tracer]: X-Ray is on only there).
        assert layer[name].extras >= requirement.extras, name
    assert "boto3" not in layer and "botocore" not in layer


def test_the_layer_is_built_by_its_makefile_for_python313_arm64():
    (layer,) = resources(TEMPLATE, "AWS::Serverless::LayerVersion").values()
    assert layer["ContentUri"] == "layers/imagegw"
    assert layer["CompatibleRuntimes"] == ["python3.13"]
    assert layer["CompatibleArchitectures"] == ["arm64"]
    assert TEMPLATE["Resources"]["ImagegwLayer"]["Metadata"]["BuildMethod"] == "makefile"
    makefile = (ROOT / "layers/imagegw/Makefile").read_text(encoding="utf-8")
    assert re.search(r"^build-ImagegwLayer:", makefile, re.MULTILINE)
    for flag in ("--platform manylinux2014_aarch64", "--python-version 3.13", "--only-binary=:all:"):
        assert flag in makefile


def test_the_bucket_is_private_encrypted_tls_only_and_expires_images():
    bucket = resources(TEMPLATE, "AWS::S3::Bucket")["ImagesBucket"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    expiring = {
        rule["Prefix"]: rule["ExpirationInDays"]
        for rule in bucket["LifecycleConfiguration"]["Rules"]
        if "ExpirationInDays" in rule
    }
    assert expiring == {
        "images/": ref("ImageRetentionDays"),
        "inputs/": ref("ImageRetentionDays"),
        "uploads/": ref("ImageRetentionDays"),
    }
    assert PARAMETERS["ImageRetentionDays"]["Default"] == 1
    policy = resources(TEMPLATE, "AWS::S3::BucketPolicy")["ImagesBucketPolicy"]
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_api_accepts_binary_uploads_and_logs_and_traces():
    api = resources(TEMPLATE, "AWS::Serverless::Api")["ImagegwApi"]
    assert set(api["BinaryMediaTypes"]) >= {
        "multipart~1form-data",
        "image~1png",
        "image~1jpeg",
        "image~1webp",
        "application~1octet-stream",
    }
    assert api["EndpointConfiguration"]["Type"] == "REGIONAL"
    assert api["TracingEnabled"] is True
    assert api["AccessLogSetting"]["DestinationArn"]
    (settings,) = api["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == ref("ThrottlingRateLimit")
    assert settings["ThrottlingBurstLimit"] == ref("ThrottlingBurstLimit")
    assert settings.get("DataTraceEnabled") is False  # request bodies (prompts) stay out of the logs


def test_the_upstream_secret_is_an_arn_parameter_never_a_key():
    parameter = PARAMETERS["UpstreamSecretArn"]
    assert "Default" not in parameter
    assert parameter.get("NoEcho") or parameter.get("AllowedPattern")
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("arn:aws:secretsmanager:eu-west-1:123456789012:secret:imagegw/upstream-AbCdEf")
    assert not pattern.fullmatch("sk-proj-0123456789abcdef")
    # Nothing else looks like a place for a plain-text credential.
    assert not [name for name in PARAMETERS if re.search(r"(?i)api.?key|token|password", name)]


def _statements(value: Any) -> list[dict[str, Any]]:
    """Every IAM statement in the template, inside Fn::If branches too."""
    found = []
    if isinstance(value, dict):
        if "Effect" in value and "Action" in value:
            found.append(value)
        for item in value.values():
            found += _statements(item)
    elif isinstance(value, list):
        for item in value:
            found += _statements(item)
    return found


def test_no_allow_statement_grants_every_action_or_every_resource():
    statements = [s for s in _statements(TEMPLATE["Resources"]) if s["Effect"] == "Allow"]
    assert statements
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not [a for a in actions if a == "*" or a.endswith(":*")], statement
        resources_ = statement.get("Resource")
        assert resources_ not in ("*", ["*"]), statement


def test_outputs():
    outputs = TEMPLATE["Outputs"]
    assert set(outputs) >= {
        "ApiUrl",
        "KeysTableName",
        "UsageTableName",
        "JobsTableName",
        "IdempotencyTableName",
        "ImagesBucketName",
        "JobsQueueUrl",
        "JobsDeadLetterQueueUrl",
    }
    assert outputs["ApiUrl"]["Value"]["Fn::Sub"].endswith("/${StageName}/v1")


def test_snapstart_is_a_parameter_off_by_default_for_the_api_functions_only():
    parameter = PARAMETERS["SnapStart"]
    assert parameter["Default"] == "false" and parameter["AllowedValues"] == ["true", "false"]
    assert TEMPLATE["Conditions"]["UseSnapStart"] == {"Fn::Equals": [ref("SnapStart"), "true"]}
    for name in API_ROUTES:
        props = FUNCTIONS[name]
        # SnapStart applies to published versions only; the API must invoke the alias SAM publishes.
        assert props["AutoPublishAlias"] == "live", name
        assert props["SnapStart"] == {
            "Fn::If": ["UseSnapStart", {"ApplyOn": "PublishedVersions"}, {"ApplyOn": "None"}]
        }, name
    worker = FUNCTIONS["JobsWorkerFunction"]
    assert "SnapStart" not in worker and "AutoPublishAlias" not in worker
    assert "SnapStart" not in TEMPLATE["Globals"]["Function"]
