"""`imagegw keys ...`: create, list, show, revoke API keys and read their usage.

    imagegw keys create --name N [--owner O] [--models m1,m2] [--quota-images N] [--quota-credits C]
                        [--rate-limit R] [--expires-in-days D] [--max-jobs-in-flight N]
    imagegw keys list
    imagegw keys show KEY_ID
    imagegw keys revoke KEY_ID
    imagegw keys usage KEY_ID [--days N]

Every command takes a target: `--local` (the local stack's `.imagegw/local.json` in the current
directory), `--stack NAME --region R` (the CloudFormation outputs KeysTableName/UsageTableName; the Region
is the stack's: --region, the Region of a stack ARN, or AWS_REGION, never a config file's default), or
`--keys-table T [--usage-table U] [--endpoint-url URL] [--region R]`. `--json` prints JSON.
The raw key is printed once, by `create`; nothing else ever prints it or its hash.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from imagegw.accounts.keys import KeyNotFound, KeyStore, public_view
from imagegw.accounts.usage import COUNTERS, UsageReader, day_range, totals

LOCAL_STATE = Path(".imagegw") / "local.json"
DAY_SECONDS = 86_400


class TargetError(Exception):
    """The command line does not say which tables to use, or they cannot be found."""


@dataclass
class Target:
    keys_table: Any
    usage_table: Any | None
    describe: str


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["keys"]:  # tolerate being handed the whole command line
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    out: TextIO = sys.stdout
    try:
        target = resolve_target(args)
        command: Callable[[argparse.Namespace, Target, TextIO], int] = args.command
        return command(args, target, out)
    except TargetError as exc:
        print(f"imagegw keys: {exc}", file=sys.stderr)
        return 2
    except KeyNotFound as exc:
        print(f"imagegw keys: no key with id {exc.args[0]!r}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"imagegw keys: AWS error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    target = argparse.ArgumentParser(add_help=False)
    where = target.add_argument_group("target (one of --local, --stack, --keys-table)")
    where.add_argument("--local", action="store_true", help="the local stack (.imagegw/local.json here)")
    where.add_argument(
        "--stack",
        metavar="NAME",
        help="a deployed CloudFormation stack (name or ARN) in the Region --region names",
    )
    where.add_argument("--keys-table", metavar="TABLE", help="the keys table, by name")
    where.add_argument("--usage-table", metavar="TABLE", help="the usage table, by name")
    where.add_argument("--endpoint-url", metavar="URL", help="DynamoDB endpoint (e.g. a moto server)")
    where.add_argument(
        "--region",
        metavar="REGION",
        help="AWS Region (--stack: required unless the stack is an ARN or AWS_REGION is set; "
        "otherwise default: the AWS config's)",
    )
    target.add_argument("--json", action="store_true", help="print JSON")

    parser = argparse.ArgumentParser(prog="imagegw keys", description="Manage imagegw API keys.")
    sub = parser.add_subparsers(dest="name", required=True, metavar="{create,list,show,revoke,usage}")

    create = sub.add_parser("create", parents=[target], help="issue a key (printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--owner", default="")
    create.add_argument("--models", help="comma-separated model names or patterns (gpt-image-*)")
    create.add_argument("--quota-images", type=_non_negative_int, metavar="N")
    create.add_argument(
        "--quota-credits",
        type=_non_negative_decimal,
        metavar="CENTS",
        help="estimated USD cents (prices.json)",
    )
    create.add_argument("--rate-limit", type=_positive_int, metavar="RPM", help="requests per minute")
    create.add_argument("--expires-in-days", type=_positive_decimal, metavar="D")
    create.add_argument(
        "--max-jobs-in-flight",
        type=_non_negative_int,
        metavar="N",
        help="async jobs queued or running at once (default: the deployment's MaxJobsInFlight)",
    )
    create.set_defaults(command=cmd_create)

    listing = sub.add_parser("list", parents=[target], help="list keys (never the keys themselves)")
    listing.set_defaults(command=cmd_list)

    show = sub.add_parser("show", parents=[target], help="one key's settings and today's usage")
    show.add_argument("key_id", metavar="KEY_ID")
    show.set_defaults(command=cmd_show)

    revoke = sub.add_parser("revoke", parents=[target], help="revoke a key (effective on the next request)")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(command=cmd_revoke)

    usage = sub.add_parser("usage", parents=[target], help="a key's usage per day and model")
    usage.add_argument("key_id", metavar="KEY_ID")
    usage.add_argument("--days", type=_positive_int, default=7, help="how many days back (default 7)")
    usage.set_defaults(command=cmd_usage)
    return parser


# -- target -----------------------------------------------------------------------------------------


def resolve_target(args: argparse.Namespace) -> Target:
    import boto3

    chosen = [bool(args.local), bool(args.stack), bool(args.keys_table)]
    if sum(chosen) != 1:
        raise TargetError("choose exactly one target: --local, --stack NAME, or --keys-table TABLE")
    if args.local:
        state = _read_local_state(Path.cwd() / LOCAL_STATE)
        # moto's server takes any credentials; fixed fake ones keep real ones out of the local stack.
        session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's fake credentials
            region_name=args.region or state.get("region") or "us-east-1",
        )
        endpoint = args.endpoint_url or state.get("endpoint_url")
        tables = state.get("tables") or {}
        keys_name, usage_name = tables.get("keys"), tables.get("usage")
        if not keys_name:
            raise TargetError(f"{LOCAL_STATE} names no keys table")
        describe = f"local stack at {endpoint}"
    elif args.stack:
        region = stack_region(args.stack, args.region, os.environ)
        session = boto3.session.Session(region_name=region)
        endpoint = args.endpoint_url
        keys_name, usage_name = _stack_tables(session, args.stack)
        describe = f"stack {args.stack} in {region}"
    else:
        session = boto3.session.Session(region_name=args.region)
        endpoint = args.endpoint_url
        keys_name, usage_name = args.keys_table, args.usage_table
        describe = f"table {keys_name}"
    dynamodb = session.resource("dynamodb", endpoint_url=endpoint)
    usage = dynamodb.Table(args.usage_table or usage_name) if (args.usage_table or usage_name) else None
    return Target(dynamodb.Table(keys_name), usage, describe)


def stack_region(stack: str, region: str | None, env: Mapping[str, str]) -> str:
    """The Region a stack lives in, said explicitly: --region, a stack ARN's Region, or AWS_REGION.

    Never the AWS config file's default Region: a stack looked up in the wrong Region is "not found" at
    best, and at worst another stack of the same name."""
    arn = re.fullmatch(r"arn:aws[a-z-]*:cloudformation:([a-z0-9-]+):\d{12}:stack/.+", stack)
    from_arn = arn.group(1) if arn else None
    if region and from_arn and region != from_arn:
        raise TargetError(f"--region {region} differs from the Region of stack ARN {stack!r} ({from_arn})")
    chosen = region or from_arn or env.get("AWS_REGION")
    if not chosen:
        raise TargetError(
            f"which Region is stack {stack!r} in? Pass --region REGION (or its ARN, or set AWS_REGION)"
        )
    return chosen


def _read_local_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TargetError(
            f"{LOCAL_STATE} not found in {Path.cwd()}: is the local stack running (make dev)?"
        ) from None
    except (OSError, ValueError) as exc:
        raise TargetError(f"cannot read {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise TargetError(f"{path} is not a JSON object")
    return state


def _stack_tables(session: Any, stack: str) -> tuple[str, str | None]:
    # --endpoint-url is for DynamoDB only; the stack's outputs come from CloudFormation itself.
    cloudformation = session.client("cloudformation")
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        raise TargetError(f"cannot read stack {stack!r}: {exc}") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])} if stacks else {}
    if "KeysTableName" not in outputs:
        raise TargetError(f"stack {stack!r} has no output KeysTableName")
    return outputs["KeysTableName"], outputs.get("UsageTableName")


# -- commands ---------------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    store = KeyStore(target.keys_table)
    expires = None
    if args.expires_in_days is not None:
        expires = int(time.time() + float(args.expires_in_days) * DAY_SECONDS)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    new = store.create(
        args.name,
        args.owner,
        allowed_models=models,
        quota_images=args.quota_images,
        quota_credits=args.quota_credits,
        rate_limit_per_minute=args.rate_limit,
        expires=expires,
        max_jobs_in_flight=args.max_jobs_in_flight,
    )
    if args.json:
        _print_json({"api_key": new.raw_key, **public_view(new.item)}, out)
        return 0
    print(f"Created {new.key_id} ({args.name}) in {target.describe}.", file=out)
    print(f"key_id:  {new.key_id}", file=out)
    print(f"api_key: {new.raw_key}", file=out)
    print("Store the API key now: it is shown only this once and cannot be recovered.", file=out)
    return 0


def cmd_list(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    items = sorted(
        (public_view(i) for i in KeyStore(target.keys_table).list_keys()),
        key=lambda i: (int(i.get("created", 0)), str(i.get("key_id"))),
    )
    if args.json:
        _print_json(items, out)
        return 0
    now = time.time()
    rows = [
        [
            str(i.get("key_id", "")),
            str(i.get("display", "")),
            str(i.get("name", "")),
            str(i.get("owner", "")),
            effective_status(i, now),
            ",".join(i.get("allowed_models") or []) or "*",
            _used_of(i.get("used_images"), i.get("quota_images")),
            _used_of(i.get("used_credits"), i.get("quota_credits"), cents=True),
            _opt(i.get("rate_limit_per_minute")),
            _date(i.get("expires")),
        ]
        for i in items
    ]
    header = ["KEY_ID", "KEY", "NAME", "OWNER", "STATUS", "MODELS", "IMAGES", "CENTS", "RPM", "EXPIRES"]
    _print_table(header, rows, out)
    if not rows:
        print("(no keys)", file=out)
    return 0


def cmd_show(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    item = public_view(KeyStore(target.keys_table).get(args.key_id))
    today_usage = None
    if target.usage_table is not None:
        first, last = day_range(datetime.now(UTC).date(), 1)
        today_usage = totals(UsageReader(target.usage_table).days(args.key_id, first, last))
    if args.json:
        _print_json({**item, "usage_today": today_usage}, out)
        return 0
    now = time.time()
    fields = [
        ("key_id", item.get("key_id")),
        ("key", item.get("display")),
        ("name", item.get("name")),
        ("owner", item.get("owner") or "-"),
        ("status", effective_status(item, now)),
        ("created", _time(item.get("created"))),
        ("expires", _time(item.get("expires"))),
        ("revoked_at", _time(item.get("revoked_at"))),
        ("models", ", ".join(item.get("allowed_models") or []) or "* (all)"),
        ("images", _used_of(item.get("used_images"), item.get("quota_images"))),
        ("credits (cents)", _used_of(item.get("used_credits"), item.get("quota_credits"), cents=True)),
        ("rate limit", f"{_opt(item.get('rate_limit_per_minute'))} requests/min"),
        ("jobs in flight", _used_of(item.get("jobs_in_flight"), item.get("max_jobs_in_flight"))),
        ("last used", _time(item.get("last_used"))),
    ]
    if today_usage is not None:
        fields.append(("today", _usage_summary(today_usage)))
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.ljust(width)}  {value}", file=out)
    return 0


def cmd_revoke(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    item = public_view(KeyStore(target.keys_table).revoke(args.key_id))
    if args.json:
        _print_json(item, out)
        return 0
    print(
        f"Revoked {item.get('key_id')} ({item.get('display')}): refused from the next request on.", file=out
    )
    return 0


def cmd_usage(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    if target.usage_table is None:
        raise TargetError("no usage table: pass --usage-table (or use --local / --stack)")
    KeyStore(target.keys_table).get(args.key_id)  # a clear error for an unknown key id
    reader = UsageReader(target.usage_table)
    first, last = day_range(datetime.now(UTC).date(), args.days)
    days = reader.days(args.key_id, first, last)
    models = reader.models(args.key_id, first, last)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in models:
        by_model.setdefault(str(row.get("model", "?")), []).append(row)
    model_totals = {model: totals(rows) for model, rows in sorted(by_model.items())}
    total = totals(days)
    if args.json:
        _print_json(
            {
                "key_id": args.key_id,
                "from": first.isoformat(),
                "to": last.isoformat(),
                "days": [{"day": d.get("day"), **{c: d.get(c, 0) for c in COUNTERS}} for d in days],
                "models": model_totals,
                "total": total,
            },
            out,
        )
        return 0
    header = [
        "DAY",
        "REQUESTS",
        "OK",
        "FAILED",
        "IMAGES",
        "INPUT_TOKENS",
        "OUTPUT_TOKENS",
        "CHARGED_USD",
        "UPSTREAM_USD",
    ]
    print(f"Usage of {args.key_id}, {first.isoformat()} to {last.isoformat()} (UTC days):", file=out)
    _print_table(
        header, [_usage_row(str(d.get("day", "")), d) for d in days] + [_usage_row("total", total)], out
    )
    if model_totals:
        print("", file=out)
        header[0] = "MODEL"
        _print_table(header, [_usage_row(model, t) for model, t in model_totals.items()], out)
    print(
        "\nCHARGED_USD is what the key was charged; UPSTREAM_USD what the upstream's usage cost at its "
        "model's prices (the operator's cost).\nCosts are estimates from the gateway's price table "
        "(prices.json), not an invoice.",
        file=out,
    )
    return 0


# -- formatting -------------------------------------------------------------------------------------


def effective_status(item: dict[str, Any], now: float) -> str:
    status = str(item.get("status", "?"))
    expires = item.get("expires")
    if status == "active" and expires is not None and int(expires) <= now:
        return "expired"
    return status


def _usage_row(label: str, row: dict[str, Any]) -> list[str]:
    return [
        label,
        str(int(row.get("requests", 0))),
        str(int(row.get("succeeded", 0))),
        str(int(row.get("failed", 0))),
        str(int(row.get("images", 0))),
        str(int(row.get("input_tokens", 0))),
        str(int(row.get("output_tokens", 0))),
        f"{Decimal(row.get('cost_cents', 0)) / 100:.4f}",
        f"{Decimal(row.get('upstream_cost_cents', 0)) / 100:.4f}",
    ]


def _usage_summary(row: dict[str, Any]) -> str:
    cost = Decimal(row.get("cost_cents", 0)) / 100
    upstream = Decimal(row.get("upstream_cost_cents", 0)) / 100
    return (
        f"{int(row.get('requests', 0))} requests ({int(row.get('failed', 0))} failed), "
        f"{int(row.get('images', 0))} images, ${cost:.4f} charged, ${upstream:.4f} upstream cost (estimates)"
    )


def _used_of(used: Any, quota: Any, *, cents: bool = False) -> str:
    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{Decimal(value):.2f}" if cents else str(int(value))

    return f"{fmt(used if used is not None else 0)}/{fmt(quota)}"


def _opt(value: Any) -> str:
    return "-" if value is None else str(int(value))


def _date(epoch: Any) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%d")


def _time(epoch: Any) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip(), file=out)


def _print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=_json_default), file=out)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set):
        return sorted(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _non_negative_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError("must be a non-negative number")
    return value


def _positive_decimal(text: str) -> Decimal:
    value = _non_negative_decimal(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
