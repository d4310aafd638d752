"""template.yaml's resource bounds and operations: memory budgets that fit the functions, alarms on what
goes wrong, reserved concurrency, the optional per-IP WAF rule, and traces without responses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagegw.images import DECODE_PIXEL_BUDGET
from imagegw.request.image_urls import DEFAULT_REQUEST_INPUT_BYTES
from imagegw.settings import Settings
from imagegw_dev.template import function_properties, load_template, resources

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
PARAMETERS: dict[str, Any] = TEMPLATE["Parameters"]
CONDITIONS: dict[str, Any] = TEMPLATE["Conditions"]
ALARMS = resources(TEMPLATE, "AWS::CloudWatch::Alarm")  # {logical id: Properties}
API_FUNCTIONS = [
    "GenerationsFunction",
    "EditsFunction",
    "VariationsFunction",
    "JobStatusFunction",
    "ModelsFunction",
]
FUNCTIONS = [*API_FUNCTIONS, "JobsWorkerFunction"]
MB = 1024 * 1024
BYTES_PER_DECODED_PIXEL = 4 * 3  # RGBA, up to three working copies (convert, paste, resize)


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def test_the_input_budget_and_the_pixel_budget_fit_the_default_function_memory():
    """Both budgets are sized for the functions' memory: inputs at most a quarter, decoded pixels about
    another third, leaving the rest to the runtime and the answer (peaks measured in test_memory_bounds)."""
    input_mb = PARAMETERS["MaxRequestInputMB"]["Default"]
    assert input_mb == Settings.max_request_input_mb == DEFAULT_REQUEST_INPUT_BYTES // MB
    for memory in ("ApiFunctionMemory", "WorkerMemory"):
        memory_mb = PARAMETERS[memory]["Default"]
        assert input_mb <= memory_mb / 4
        assert memory_mb * MB / 3 >= DECODE_PIXEL_BUDGET * BYTES_PER_DECODED_PIXEL


def test_every_function_gets_the_input_budget_and_traces_no_response():
    for name in FUNCTIONS:
        env = function_properties(TEMPLATE, name)["Environment"]["Variables"]
        assert env["IMAGEGW_MAX_REQUEST_INPUT_MB"] == ref("MaxRequestInputMB")
        assert env["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"  # base64 images, presigned URLs
        assert (
            "POWERTOOLS_TRACER_CAPTURE_ERROR" not in env or env["POWERTOOLS_TRACER_CAPTURE_ERROR"] == "true"
        )


def test_api_functions_take_reserved_concurrency_from_a_parameter_off_by_default():
    assert PARAMETERS["ApiReservedConcurrency"]["Default"] == 0
    assert CONDITIONS["HasApiReservedConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [ref("ApiReservedConcurrency"), 0]}]
    }
    for name in API_FUNCTIONS:
        value = function_properties(TEMPLATE, name)["ReservedConcurrentExecutions"]
        assert value == {
            "Fn::If": ["HasApiReservedConcurrency", ref("ApiReservedConcurrency"), ref("AWS::NoValue")]
        }
    assert "ReservedConcurrentExecutions" not in function_properties(TEMPLATE, "JobsWorkerFunction")


def metric_names(alarm: dict[str, Any]) -> set[tuple[str, str]]:
    props = alarm
    if "MetricName" in props:
        return {(props["Namespace"], props["MetricName"])}
    return {
        (query["MetricStat"]["Metric"]["Namespace"], query["MetricStat"]["Metric"]["MetricName"])
        for query in props["Metrics"]
        if "MetricStat" in query
    }


def test_alarms_cover_the_dead_letter_queue_5xx_lambda_errors_throttles_and_upstream_failures():
    watched = set().union(*(metric_names(alarm) for alarm in ALARMS.values()))
    assert {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/ApiGateway", "5XXError"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("imagegw", "UpstreamFailures"),
    } <= watched
    dlq = ALARMS["JobsDeadLetterAlarm"]
    assert dlq["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")  # any message


def test_lambda_alarms_sum_every_function_of_the_stack():
    for name in ("LambdaErrorsAlarm", "LambdaThrottlesAlarm"):
        queries = ALARMS[name]["Metrics"]
        functions = {
            dimension["Value"]["Ref"]
            for query in queries
            if "MetricStat" in query
            for dimension in query["MetricStat"]["Metric"]["Dimensions"]
        }
        assert functions == set(FUNCTIONS)
        (expression,) = [query["Expression"] for query in queries if "Expression" in query]
        assert sorted(expression.replace(" ", "").split("+")) == sorted(
            query["Id"] for query in queries if "MetricStat" in query
        )


def test_the_upstream_failures_alarm_reads_the_metric_the_api_emits():
    api_source = (ROOT / "layers" / "imagegw" / "imagegw" / "api.py").read_text()
    assert 'name="UpstreamFailures"' in api_source
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    props = ALARMS["UpstreamFailuresAlarm"]
    assert props["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert props["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]


def test_every_alarm_notifies_the_optional_topic():
    assert PARAMETERS["AlarmTopicArn"]["Default"] == ""
    for name, alarm in ALARMS.items():
        actions = alarm["AlarmActions"]
        assert actions == {"Fn::If": ["HasAlarmTopic", [ref("AlarmTopicArn")], ref("AWS::NoValue")]}, name
        assert alarm["TreatMissingData"] == "notBreaching", name


def test_the_waf_web_acl_is_optional_rate_limits_per_ip_and_guards_the_stage():
    assert PARAMETERS["WafRateLimitPerIp"]["Default"] == 0  # off by default
    acl = TEMPLATE["Resources"]["ApiWebAcl"]
    association = TEMPLATE["Resources"]["ApiWebAclAssociation"]
    assert acl["Condition"] == association["Condition"] == "HasWaf"
    props = acl["Properties"]
    assert props["Scope"] == "REGIONAL" and props["DefaultAction"] == {"Allow": {}}
    (rule,) = props["Rules"]
    assert rule["Statement"]["RateBasedStatement"] == {
        "Limit": ref("WafRateLimitPerIp"),
        "AggregateKeyType": "IP",
    }
    block = rule["Action"]["Block"]["CustomResponse"]
    assert block["ResponseCode"] == 429
    assert (
        '"code": "rate_limit_exceeded"'
        in props["CustomResponseBodies"][block["CustomResponseBodyKey"]]["Content"]
    )
    arn = association["Properties"]["ResourceArn"]["Fn::Sub"]
    assert "/restapis/${ImagegwApi}/stages/${ImagegwApi.Stage}" in arn


def test_handlers_never_put_their_response_in_a_trace():
    """Powertools records a handler's response in its trace by default: base64 images and presigned URLs.
    Off in code as well as in the environment, so a function without the template's variable is safe."""
    sources = [*(ROOT / "layers" / "imagegw" / "imagegw").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]
    decorated = [
        line.strip()
        for path in sources
        for line in path.read_text().splitlines()
        if line.strip().startswith("@") and ("capture_lambda_handler" in line or "capture_method" in line)
    ]
    assert decorated, "the handlers are traced"
    assert all("capture_response=False" in line for line in decorated), decorated
