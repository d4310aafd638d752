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
from imagegw_dev.template import function_properties, load_template, loads_template, resources

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
    # Defaults: the API functions outlive the integration timeout.
    assert PARAMETERS["ApiFunctionTimeout"]["Default"] * 1000 > PARAMETERS["ApiTimeoutMs"]["Default"]


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
    assert props["Timeout"] == ref("ApiFunctionTimeout")
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
    assert expiring == {"images/": ref("ImageRetentionDays"), "inputs/": ref("ImageRetentionDays")}
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


# ---------------------------------------------------------------------------------------------------------
# imagegw_dev.template, the loader the tests and the local stack share


def test_the_loader_reads_short_form_intrinsics_as_cloudformation_does():
    template = loads_template(
        """
AWSTemplateFormatVersion: 2010-09-09
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      A: !Ref Bucket
      B: !GetAtt Queue.Arn
      C: !Sub "${AWS::StackName}-x"
      D: !If [IsProd, !Ref AWS::NoValue, [1, 2]]
      E: !FindInMap [M, !Ref P, K]
      F: !Condition IsProd
  Other:
    Type: AWS::S3::Bucket
"""
    )
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"
    assert resources(template, "AWS::S3::Bucket") == {"Other": {}}
    assert resources(template, "AWS::Serverless::Function")["Fn"] == {
        "A": {"Ref": "Bucket"},
        "B": {"Fn::GetAtt": ["Queue", "Arn"]},
        "C": {"Fn::Sub": "${AWS::StackName}-x"},
        "D": {"Fn::If": ["IsProd", {"Ref": "AWS::NoValue"}, [1, 2]]},
        "E": {"Fn::FindInMap": ["M", {"Ref": "P"}, "K"]},
        "F": {"Condition": "IsProd"},
    }


def test_function_properties_merge_globals_the_way_sam_does():
    template = loads_template(
        """
Globals:
  Function:
    Timeout: 3
    Layers: [!Ref L1]
    Environment: {Variables: {A: "1", B: "2"}}
    Tracing: !If [C, Active, PassThrough]
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Timeout: 10
      Layers: [!Ref L2]
      Environment: {Variables: {B: "3"}}
      Tracing: Active
"""
    )
    assert function_properties(template, "Fn") == {
        "Timeout": 10,
        "Layers": [{"Ref": "L1"}, {"Ref": "L2"}],
        "Environment": {"Variables": {"A": "1", "B": "3"}},
        "Tracing": "Active",
    }


# ---------------------------------------------------------------------------------------------- CORS


def test_cors_is_a_parameter_off_by_default_and_a_setting():
    assert PARAMETERS["CorsAllowOrigins"]["Default"] == ""
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert env["IMAGEGW_CORS_ALLOW_ORIGINS"] == ref("CorsAllowOrigins")
    pattern = re.compile(PARAMETERS["CorsAllowOrigins"]["AllowedPattern"])
    for good in ("", "https://app.example.com", "https://a.example,http://localhost:5173"):
        assert pattern.fullmatch(good), good
    for bad in ("*", "https://app.example.com/", "https://a.example, https://b.example", "app.example.com"):
        assert not pattern.fullmatch(bad), bad


def _gateway_headers(origins: str, request_origin: str) -> dict[str, dict[str, str]]:
    """Each gateway response's headers as API Gateway renders them for this parameter value and request."""
    from imagegw_dev.template import NO_VALUE, evaluate, parameter_values

    params = parameter_values(TEMPLATE, {"CorsAllowOrigins": origins})
    (api,) = resources(TEMPLATE, "AWS::Serverless::Api").values()
    rendered: dict[str, dict[str, str]] = {}
    for name, response in api["GatewayResponses"].items():
        headers: dict[str, str] = {}
        for header, expression in response["ResponseParameters"]["Headers"].items():
            value = evaluate(expression, TEMPLATE, params)
            if value is NO_VALUE:
                continue
            headers[header] = request_origin if value == "method.request.header.origin" else value.strip("'")
        rendered[name] = headers
    return rendered


def test_gateway_responses_carry_cors_headers_only_when_origins_are_configured():
    from imagegw.cors import EXPOSE_HEADERS

    (api,) = resources(TEMPLATE, "AWS::Serverless::Api").values()
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "MISSING_AUTHENTICATION_TOKEN"} <= set(api["GatewayResponses"])
    for headers in _gateway_headers("", "https://app.example.com").values():
        assert headers == {}
    one = _gateway_headers("https://app.example.com", "https://evil.example")
    for headers in one.values():
        # one origin: named statically, whatever the request's origin (the browser refuses the others)
        assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert headers["Vary"] == "Origin"
        exposed = {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}
        assert exposed <= {h.strip() for h in EXPOSE_HEADERS.split(",")} and "x-request-id" in exposed
    several = _gateway_headers("https://a.example,https://b.example", "https://b.example")
    for headers in several.values():
        assert headers["Access-Control-Allow-Origin"] == "https://b.example"  # echoed: see docs/deploy.md


def test_every_api_path_answers_its_preflight_in_the_function_that_serves_it():
    for name, props in FUNCTIONS.items():
        events = [e["Properties"] for e in (props.get("Events") or {}).values() if e["Type"] == "Api"]
        paths = {e["Path"] for e in events if e["Method"] != "options"}
        assert {e["Path"] for e in events if e["Method"] == "options"} == paths, name
