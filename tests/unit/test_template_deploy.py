"""What a first `sam deploy` depends on, checked from the template, its SAM transform and the layer's lock.

The transform is samtranslator's (the library `sam validate` and CloudFormation's AWS::Serverless transform
use), run offline: code locations become placeholder S3 URIs, as `sam validate` does.
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from imagegw_dev.template import load_template, resources

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
PARAMETERS: dict[str, Any] = TEMPLATE["Parameters"]
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:imagegw/upstream-AbCdEf"


@cache
def _transformed(configure_account: str) -> dict[str, Any]:
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    template = copy.deepcopy(TEMPLATE)
    for resource in template["Resources"].values():
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = "s3://bucket/key"
    session = boto3.session.Session(
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    parameters = {"UpstreamSecretArn": SECRET, "ConfigureApiGatewayAccount": configure_account}
    result: dict[str, Any] = Translator({}, Parser(), boto_session=session).translate(
        template, parameter_values=parameters, get_managed_policy_map=dict
    )
    return result


def _references(value: Any) -> set[str]:
    """Logical ids a value names through Ref, Fn::GetAtt or Fn::Sub."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref":
                found.add(str(inner))
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else str(inner).split(".")[0])
            elif key == "Fn::Sub":
                text, variables = (inner, {}) if isinstance(inner, str) else (inner[0], inner[1])
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)}
                found |= _references(variables)
            else:
                found |= _references(inner)
    elif isinstance(value, list):
        for item in value:
            found |= _references(item)
    return found


def _depends_on(template: dict[str, Any], name: str) -> set[str]:
    """Every resource CloudFormation creates before `name`: references (Metadata included) and DependsOn,
    transitively."""
    resources_ = template["Resources"]
    seen: set[str] = set()
    todo = [name]
    while todo:
        resource = resources_[todo.pop()]
        direct = _references({k: v for k, v in resource.items() if k in ("Properties", "Metadata")})
        depends = resource.get("DependsOn", [])
        direct |= set([depends] if isinstance(depends, str) else depends)
        for other in direct & set(resources_):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


def _stage(template: dict[str, Any]) -> str:
    (stage,) = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::ApiGateway::Stage"]
    return stage


# ---------------------------------------------------------------------------------------------------------
# The API Gateway account setting and the execution log group


def test_the_api_gateway_account_setting_is_off_by_default():
    assert PARAMETERS["ConfigureApiGatewayAccount"]["Default"] == "false"
    for name in ("ApiGatewayAccount", "ApiGatewayCloudWatchRole"):
        assert TEMPLATE["Resources"][name]["Condition"] == "ConfigureApiGatewayAccount"
    assert TEMPLATE["Conditions"]["ConfigureApiGatewayAccount"] == {
        "Fn::Equals": [{"Ref": "ConfigureApiGatewayAccount"}, "true"]
    }


@pytest.mark.parametrize("configure_account", ["false", "true"])
def test_the_stage_is_created_after_the_execution_log_group(configure_account):
    template = _transformed(configure_account)
    before_stage = _depends_on(template, _stage(template))
    assert {"ApiExecutionLogGroup", "ApiAccessLogGroup"} <= before_stage
    # The log group is named after the API and stage, so it comes after the RestApi, never before the stage.
    execution = template["Resources"]["ApiExecutionLogGroup"]
    assert execution["Properties"]["LogGroupName"] == {
        "Fn::Sub": "API-Gateway-Execution-Logs_${ImagegwApi}/${StageName}"
    }
    assert _stage(template) not in _depends_on(template, "ApiExecutionLogGroup")


def test_when_the_stack_sets_the_account_the_stage_waits_for_it():
    template = _transformed("true")
    assert {"ApiGatewayAccount", "ApiGatewayCloudWatchRole"} <= _depends_on(template, _stage(template))


def test_the_stage_logs_at_error_level_to_the_access_log_group():
    template = _transformed("false")
    stage = template["Resources"][_stage(template)]["Properties"]
    assert stage["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    (settings,) = stage["MethodSettings"]
    assert settings["LoggingLevel"] == "ERROR" and settings["DataTraceEnabled"] is False


# ---------------------------------------------------------------------------------------------------------
# Gateway responses: what API Gateway answers itself


GATEWAY_RESPONSES = resources(TEMPLATE, "AWS::Serverless::Api")["ImagegwApi"]["GatewayResponses"]


def _body(response_type: str) -> dict[str, Any]:
    import json

    text = GATEWAY_RESPONSES[response_type]["ResponseTemplates"]["application/json"]
    return dict(json.loads(text.replace("$context.error.messageString", '"m"')))


def test_request_too_large_is_a_413_naming_json_edits_and_not_to_be_retried():
    response = GATEWAY_RESPONSES["REQUEST_TOO_LARGE"]
    assert response["StatusCode"] == 413
    headers = response["ResponseParameters"]["Headers"]
    assert headers["x-should-retry"] == "'false'"
    assert headers["x-request-id"] == "context.requestId"
    error = _body("REQUEST_TOO_LARGE")["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        None,
        "request_too_large",
    )
    assert "JSON edit" in error["message"] and '"image_url"' in error["message"]


def test_integration_failure_does_not_blame_the_request():
    response = GATEWAY_RESPONSES["INTEGRATION_FAILURE"]
    assert response["StatusCode"] >= 500
    message = _body("INTEGRATION_FAILURE")["error"]["message"].lower()
    assert not [word for word in ("body", "large", "size", "mb", "json edit") if word in message]


@pytest.mark.parametrize("response_type", sorted(GATEWAY_RESPONSES))
def test_every_gateway_response_is_an_openai_error_with_the_request_id(response_type):
    response = GATEWAY_RESPONSES[response_type]
    assert response["ResponseParameters"]["Headers"]["x-request-id"] == "context.requestId"
    assert set(_body(response_type)["error"]) == {"message", "type", "param", "code"}


def test_the_transform_carries_the_header_mappings_to_api_gateway():
    template = _transformed("false")
    body = template["Resources"]["ImagegwApi"]["Properties"]["Body"]
    mapped = body["x-amazon-apigateway-gateway-responses"]["REQUEST_TOO_LARGE"]["responseParameters"]
    assert mapped["gatewayresponse.header.x-request-id"] == "context.requestId"
    assert mapped["gatewayresponse.header.x-should-retry"] == "'false'"
    # The rest are the CORS headers, present only when CorsAllowOrigins is set (tests/unit/test_cors.py).
    assert set(mapped) - {"gatewayresponse.header.x-request-id", "gatewayresponse.header.x-should-retry"} == {
        "gatewayresponse.header.Access-Control-Allow-Origin",
        "gatewayresponse.header.Access-Control-Expose-Headers",
        "gatewayresponse.header.Vary",
    }


# ---------------------------------------------------------------------------------------------------------
# Parameters a first deploy in a new account meets


def test_the_worker_cannot_take_a_new_accounts_whole_concurrency_by_default():
    parameter = PARAMETERS["WorkerMaxConcurrency"]
    assert parameter["MinValue"] == 2  # Lambda's minimum for an SQS event source's MaximumConcurrency
    assert parameter["Default"] <= 5  # new accounts may have 10 concurrent executions in all
    worker = resources(TEMPLATE, "AWS::Serverless::Function")["JobsWorkerFunction"]
    (event,) = worker["Events"].values()
    assert event["Properties"]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaxConcurrency"}}


def test_there_is_one_timeout_parameter():
    assert "ApiFunctionTimeout" not in PARAMETERS
    assert PARAMETERS["ApiTimeoutMs"]["Default"] == 29000


@pytest.mark.parametrize(
    ("table", "parameter"), [("KeysTable", "ExistingKeysTableName"), ("UsageTable", "ExistingUsageTableName")]
)
def test_a_retained_table_can_be_taken_over_by_a_new_stack(table, parameter):
    resource = TEMPLATE["Resources"][table]
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
    condition = resource["Condition"]
    assert TEMPLATE["Conditions"][condition] == {"Fn::Equals": [{"Ref": parameter}, ""]}
    assert PARAMETERS[parameter]["Default"] == ""
    assert re.fullmatch(PARAMETERS[parameter]["AllowedPattern"], "imagegw-KeysTable-1A2B3C4D5E6F")
    # No reference to the table outside a branch of its own condition: CloudFormation would refuse the stack
    # with the table not created.
    resources_ = {k: v for k, v in TEMPLATE["Resources"].items() if k != table}
    for where in (resources_, TEMPLATE["Globals"], TEMPLATE["Outputs"]):
        assert not _unguarded_references(where, table, condition), table


def _unguarded_references(value: Any, name: str, condition: str) -> list[Any]:
    if isinstance(value, dict):
        if "Fn::If" in value and value["Fn::If"][0] == condition:
            return _unguarded_references(value["Fn::If"][2], name, condition)
        if name in _references({k: v for k, v in value.items() if k in ("Ref", "Fn::GetAtt", "Fn::Sub")}):
            return [value]
        return [found for inner in value.values() for found in _unguarded_references(inner, name, condition)]
    if isinstance(value, list):
        return [found for inner in value for found in _unguarded_references(inner, name, condition)]
    return []


def test_outputs_name_the_dead_letter_queue_for_a_redrive():
    outputs = TEMPLATE["Outputs"]
    assert outputs["JobsDeadLetterQueueArn"]["Value"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}
    assert outputs["JobsDeadLetterQueueUrl"]["Value"] == {"Ref": "JobsDeadLetterQueue"}
    assert outputs["JobsQueueArn"]["Value"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    for name in ("KeysTableName", "UsageTableName"):
        assert "Fn::If" in outputs[name]["Value"]  # the created table, or the one taken over


# ---------------------------------------------------------------------------------------------------------
# The layer's lock: exact versions and hashes, in step with pyproject.toml


LOCK = ROOT / "layers/imagegw/requirements.lock"


def _locked() -> dict[str, tuple[Requirement, list[str]]]:
    """name -> (the pinned requirement, its hashes) from the lock's `name==version \\ --hash=...` blocks."""
    text = "\n".join(line.split("#", 1)[0].rstrip() for line in LOCK.read_text(encoding="utf-8").splitlines())
    found = {}
    for entry in re.sub(r"\\\n\s*", " ", text).splitlines():
        if not entry.strip():
            continue
        spec, *hashes = entry.split(" --hash=")
        requirement = Requirement(spec.strip())
        found[canonicalize_name(requirement.name)] = (requirement, [h.strip() for h in hashes])
    return found


def test_every_locked_package_is_one_version_with_sha256_hashes():
    locked = _locked()
    assert len(locked) >= 5
    for name, (requirement, hashes) in locked.items():
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", name
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
        assert requirement.marker is None, f"{name}: a marker would make the lock depend on who resolves it"


def test_the_lock_pins_every_runtime_dependency_inside_pyprojects_range():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = {
        canonicalize_name(Requirement(d).name): Requirement(d) for d in pyproject["project"]["dependencies"]
    }
    wanted.pop("boto3")  # the Lambda runtime provides it
    locked = _locked()
    for name, requirement in wanted.items():
        assert name in locked, f"{name} is not in requirements.lock: run make lock"
        pinned, _ = locked[name]
        version = Version(next(iter(pinned.specifier)).version)
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} is outside pyproject's {requirement.specifier}: run make lock"
        )
        assert pinned.extras >= requirement.extras, name
    layer = [
        Requirement(line.split("#", 1)[0])
        for line in (ROOT / "layers/imagegw/requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.split("#", 1)[0].strip()
    ]
    for requirement in layer:
        pinned, _ = locked[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(next(iter(pinned.specifier)).version, prereleases=True)
        assert pinned.extras >= requirement.extras, requirement.name


def test_the_layer_build_installs_the_lock_and_requires_its_hashes():
    makefile = (ROOT / "layers/imagegw/Makefile").read_text(encoding="utf-8")
    (install,) = [line for line in makefile.splitlines() if "pip install" in line]
    assert "--require-hashes" in install and "-r requirements.lock" in install
    assert "requirements.txt" not in install


# ---------------------------------------------------------------------------------------------------------
# docs/deploy.md: every project command in it is one the project has


DEPLOY_DOC = ROOT / "docs/deploy.md"


def _commands(prefix: str) -> list[list[str]]:
    """The shell commands in the doc's code blocks that start with `prefix` (continuation lines joined)."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.DOTALL)
    found = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            for command in re.split(r"&&|;", line.split(" #", 1)[0]):
                command = command.strip()
                if command.startswith(prefix):
                    found.append(shlex.split(command))
    return found


def test_the_deploy_doc_exists_and_the_readme_links_it():
    assert DEPLOY_DOC.is_file()
    assert "docs/deploy.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_imagegw_command_in_the_deploy_doc_parses():
    from imagegw_dev.admin import build_parser

    commands = _commands(".venv/bin/imagegw")
    assert len(commands) >= 2
    for argv in commands:
        assert argv[1] == "keys", argv
        args = build_parser().parse_args(argv[2:])
        assert args.stack and args.region, f"{argv}: a deployed stack is named with its Region"


def test_every_make_target_in_the_deploy_doc_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.MULTILINE))
    commands = _commands("make ")
    assert commands
    for argv in commands:
        assert set(a for a in argv[1:] if "=" not in a) <= targets, argv
