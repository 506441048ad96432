"""`tandem`: the operator CLI (status, deploy, doctor, drill, invoke, twin). Errors are one clear line on stderr,
never a traceback.

Exit codes: 0 done (a drill that PASSED; a status shown, even with a region unreachable; failover armed); 1 a
drill whose audit FAILED, a function error from invoke, or failover not armed (doctor); 2 could not run (bad
input, no twin, an outage mid-run, a deploy refused or failed); 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tandem.aws_regions import check_region
from tandem.lambda_runtime import functions

#: tandem.drill.SCENARIOS, named here so `tandem --help` does not import the drill (matplotlib, the twin)
DRILL_SCENARIOS = (
    "region-loss", "switchover", "blip", "dr-not-ready", "backlog", "partition", "retry-storm", "stuck-promotion",
    "grey-database", "dr-fault", "all", "steady",
)  # fmt: skip


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


OPERATOR_ACTIONS = ("plan", "failover", "switchover", "failback", "executions", "reconcile")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    drill = sub.add_parser("drill", help="rehearse losing a region on the local twin, then audit it from the data")
    drill.add_argument("--transactions", type=_non_negative, default=200, help="distinct valid transactions")
    drill.add_argument("--poison", type=_non_negative, default=5, help="extra invalid messages")
    drill.add_argument("--duplicates", type=_non_negative, default=20, help="redeliveries of sent valid messages")
    drill.add_argument("--seed", type=int, default=1)
    drill.add_argument("--report", type=Path, help="where to write the JSON report (default reports/drill-*.json)")
    drill.add_argument("--scenario", choices=list(DRILL_SCENARIOS), default="region-loss",
                       help="region-loss: the primary dies mid-stream, nobody calls anything (default); switchover: "
                            "an operator's planned switchover mid-stream; blip: an outage shorter than detection; "
                            "dr-not-ready: replication paused, then the outage; backlog: the primary dies with a "
                            "replication backlog that returns slowly; partition: the primary cut off but alive; "
                            "retry-storm: the region loss with clients that retry (lost answers, re-stamped "
                            "created_at); stuck-promotion: the region loss with the first promotions failing; "
                            "grey-database: only the primary's database dies; dr-fault: DR cut off from a healthy "
                            "primary; all: each once; steady: one region, no outage")  # fmt: skip
    drill.add_argument(
        "--outage-at", type=float, default=0.3, help="fraction of the workload sent when the disruption starts"
    )
    drill.add_argument("--outage-for", type=_positive_float, default=None,
                       help="emulated seconds until the primary returns (default: region-loss 300, blip 10, "
                            "dr-not-ready 240, backlog 240, partition 480, retry-storm 300)")  # fmt: skip
    drill.add_argument("--producers", type=_non_negative, default=4, help="concurrent producers (two-region scenarios)")
    drill.add_argument(
        "--rate",
        type=_non_negative_float,
        default=2.0,
        help="messages per emulated second, all producers together (0: as fast as they go)",
    )

    invoke = sub.add_parser("invoke", help="run one function with an event file, Docker-free")
    invoke.add_argument("function", choices=sorted(functions()))
    invoke.add_argument("event", type=Path)
    invoke.add_argument("--region", type=_region, default="us-east-1")

    status = sub.add_parser("status", help="both regions: role, writer, processing, readiness, lag, peer liveness")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--target", choices=["twin", "aws"], help="default: the running twin (aws when --profile is given)"
    )
    status.add_argument("--profile", help="AWS profile for --target aws (default: the boto3 credential chain)")
    status.add_argument(
        "--state-dir", type=Path, default=None, help="the twin's (default .tandem/twin or $TANDEM_TWIN_DIR)"
    )

    deploy = sub.add_parser(
        "deploy", help="both templates to both regions, in order, through sam deploy, ending with failover armed"
    )
    deploy.add_argument("--target", choices=["twin", "aws"], help="default: the running twin (aws with --profile)")
    deploy.add_argument("--profile", help="AWS profile for --target aws (default: the boto3 credential chain)")
    deploy.add_argument("--dry-run", action="store_true", help="create and print each stack's change set, execute none")
    deploy.add_argument("--config-file", type=Path, default=None, help="samconfig.toml to read (default: the repo's)")
    deploy.add_argument("--state-dir", type=Path, default=None, help="the twin's (default .tandem/twin)")

    doctor = sub.add_parser("doctor", help="is automatic failover armed, now, in both regions? (exit 0 only if so)")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.add_argument("--target", choices=["twin", "aws"], help="default: the running twin (aws with --profile)")
    doctor.add_argument("--profile", help="AWS profile for --target aws (default: the boto3 credential chain)")
    doctor.add_argument("--config-file", type=Path, default=None, help="samconfig.toml to read (default: the repo's)")
    doctor.add_argument("--state-dir", type=Path, default=None, help="the twin's (default .tandem/twin)")

    helps = {
        "plan": "dry run: what a failover to DR would do now, or why it would be refused (changes nothing)",
        "failover": "activate the DR region (a switchover when the primary is caught up, else AllowDataLoss)",
        "switchover": "planned move to the DR region (RPO 0; needs the primary)",
        "failback": "planned switchover back to the primary region (once it is caught up)",
        "executions": "the failover executions, newest first, with their steps",
        "reconcile": "in the active region: forward stranded messages, redrive DLQs, replay the old region's journal",
    }
    for name, text in helps.items():
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--json", action="store_true", help="print the handler's answer as JSON")
        cmd.add_argument("--target", choices=["twin", "aws"], help="default: the running twin (aws with --profile)")
        cmd.add_argument("--profile", help="AWS profile for --target aws (default: the boto3 credential chain)")
        cmd.add_argument("--state-dir", type=Path, default=None, help="the twin's (default .tandem/twin)")
        cmd.add_argument("--region", type=_region, help="invoke this region's handler instead of the default")
        if name == "failover":
            cmd.add_argument("--force", action="store_true", help="override the readiness gate and minimum delay")
        if name in ("switchover", "failback"):
            cmd.add_argument(
                "--force", action="store_true",
                help="override the minimum delay and a reconciliation still owed (it stays owed, per epoch)",
            )  # fmt: skip

    twin = sub.add_parser("twin", help="the local twin: two AWS regions on this machine")
    twin.add_argument("--state-dir", type=Path, default=None, help="default .tandem/twin (or $TANDEM_TWIN_DIR)")
    tsub = twin.add_subparsers(dest="twin_command", required=True)
    up = tsub.add_parser("up", help="start and provision both regions")
    up.add_argument("--detach", action="store_true", help="return once ready (else run until Ctrl-C)")
    up.add_argument("--scale", type=_positive_float, default=1.0, help="clock compression (60: a minute per second)")
    up.add_argument("--primary", type=_region, default="us-east-1")
    up.add_argument("--dr", type=_region, default="us-west-2")
    up.add_argument(
        "--parameter-overrides", type=_override, nargs="+", default=[], metavar="KEY=VALUE",
        help="app template parameters for both regions, as sam deploy takes them (e.g. FailoverMinDelaySeconds=60)",
    )  # fmt: skip
    st = tsub.add_parser("status", help="regions, endpoints, databases, replication")
    st.add_argument("--json", action="store_true")
    for name, text in (
        ("outage", "take a region down (APIs, ingress, database; its replication is held), or one part of it"),
        ("restore", "bring a region (or the part an outage took) back (its replication backlog then arrives)"),
        ("partition", "cut a region off but keep it alive: nothing crosses between the regions (split brain)"),
        ("heal", "reconnect a partitioned region (its database rejoins; the replication backlog arrives)"),
        ("deploy", "deploy the region's app stack again, as `sam deploy --config-env <role>` would"),
    ):
        cmd = tsub.add_parser(name, help=text)
        cmd.add_argument("region")
        if name == "outage":
            cmd.add_argument(
                "--only", choices=["database", "ingress", "functions"], default=None,
                help="a grey failure: only the region's Aurora cluster, its ingress (HTTP API) or Lambda dies; "
                     "the rest of the region keeps working",
            )  # fmt: skip
        if name in ("restore", "heal"):
            cmd.add_argument(
                "--backlog-pace", type=_positive_float, default=None, metavar="N",
                help="replicated changes per emulated second the backlog arrives at, per store (default 20)",
            )  # fmt: skip
    rep = tsub.add_parser("replication", help="pause or resume replication between the regions (Aurora, DynamoDB, S3)")
    rep.add_argument("action", choices=["pause", "resume"])
    rep.add_argument("--store", choices=["aurora", "dynamodb", "s3"], help="one store (default: all three)")
    fault = tsub.add_parser("fault", help="inject a fault (as AWS FIS would)")
    fault.add_argument("what", choices=["promotion"], help="promotion: Aurora's switchover/failover API calls")
    fault.add_argument(
        "--fail", type=_count, default=None, metavar="N",
        help="the next N promotions fail: the call errs, the writer stays (default 1 without --delay; 0 clears it)",
    )  # fmt: skip
    fault.add_argument(
        "--delay", type=_seconds, default=None, metavar="SECONDS",
        help="the next promotion is accepted at once and moves the writer SECONDS emulated seconds late "
             "(a slow control plane; 0 clears it)",
    )  # fmt: skip
    tsub.add_parser("down", help="stop the twin and remove everything it created")
    return parser


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _seconds(text: str) -> float:
    """A duration in emulated seconds: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds >= 0")
    return value


def _non_negative_float(text: str) -> float:
    return _positive_float(text) if text.strip() not in ("0", "0.0") else 0.0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def _override(text: str) -> tuple[str, str]:
    from tandem.twin.stacks import parameter_override

    try:
        return parameter_override(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _region(text: str) -> str:
    try:
        return check_region(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _twin(args: argparse.Namespace) -> int:
    from tandem.twin import launcher
    from tandem.twin.control import call, default_state_dir

    state_dir = args.state_dir or default_state_dir()
    match args.twin_command:
        case "up":
            if args.primary == args.dr:
                raise ValueError(f"--primary and --dr must be two different regions (both are {args.primary})")
            status = launcher.start(
                state_dir, scale=args.scale, primary=args.primary, dr=args.dr,
                parameter_overrides=dict(args.parameter_overrides),
            )  # fmt: skip
            print(_describe(status))
            if args.detach:
                return 0
            print("running; Ctrl-C stops it")
            try:
                while launcher.is_running(state_dir):
                    time.sleep(0.5)
            except KeyboardInterrupt:
                launcher.stop(state_dir)
            return 0
        case "status":
            status = call(state_dir, "GET", "/status")
            print(json.dumps(status, indent=2) if args.json else _describe(status))
            return 0
        case "outage" | "restore" | "deploy" | "partition" | "heal":
            pace, only = getattr(args, "backlog_pace", None), getattr(args, "only", None)
            body = {"backlog_pace": pace} if pace is not None else {"only": only} if only is not None else None
            print(_describe(call(state_dir, "POST", f"/{args.twin_command}/{args.region}", body=body)))
            return 0
        case "fault":
            fault: dict[str, Any] = {} if args.fail is None else {"fail": args.fail}
            if args.delay is not None:
                fault["delay_seconds"] = args.delay
            status = call(state_dir, "POST", "/faults/promotion", body=fault or {"fail": 1})
            if "fail" in fault or not fault:
                print(f"the next {status['promotions_to_fail']} Aurora promotion(s) fail")
            if "delay_seconds" in fault:
                print(f"the next Aurora promotion moves the writer {status['promotion_delay_seconds']:g} "
                      "emulated seconds late")  # fmt: skip
            return 0
        case "replication":
            status = call(state_dir, "POST", f"/replication/{args.action}" + (f"/{args.store}" if args.store else ""))
            print(json.dumps(status["replication"], indent=2))
            return 0
        case "down":
            launcher.stop(state_dir)
            print("twin stopped")
            return 0
    return 2


def _status(args: argparse.Namespace) -> int:
    """Exit 0 whenever the view is shown: an unreachable region is part of the answer, not a failure to run."""
    from tandem import status

    source, targets = _sources(args)
    view = status.collect(source, targets, "aws" if isinstance(source, status.AwsClients) else "twin")
    print(status.to_json(view) if args.json else status.describe(view))
    return 0


def _sources(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """Where `status` and the operator commands read and act: the running twin, or AWS per samconfig.toml."""
    from tandem import status
    from tandem.twin.control import TwinNotRunning, call, default_state_dir

    target = args.target or ("aws" if args.profile else None)
    if target == "twin" and args.profile:
        raise ValueError("--profile applies to --target aws only")
    if target == "aws" and args.state_dir is not None:
        raise ValueError("--state-dir applies to the twin only")
    if target == "aws":
        return status.AwsClients(args.profile), list(status.aws_targets())
    try:
        return status.twin_targets(call(args.state_dir or default_state_dir(), "GET", "/status", timeout=30))
    except TwinNotRunning as exc:
        if target is None:
            raise RuntimeError(f"{exc}, or use AWS with --target aws") from None
        raise


def _account(args: argparse.Namespace) -> tuple[str, Any, Any, dict[str, Any] | None]:
    """`deploy` and `doctor`: the target's name, its plan (samconfig.toml, the twin's regions and site inputs),
    its clients and, for the twin, its /status."""
    from tandem import status
    from tandem.deploy.plan import make_plan
    from tandem.template import SAMCONFIG
    from tandem.twin.control import call, default_state_dir

    target = args.target or ("aws" if args.profile else "twin")
    config_file = (args.config_file or SAMCONFIG).resolve()
    if target == "twin" and args.profile:
        raise ValueError("--profile applies to --target aws only")
    if target == "aws":
        if args.state_dir is not None:
            raise ValueError("--state-dir applies to the twin only")
        return target, make_plan(config_file), status.AwsClients(args.profile), None
    twin = call(args.state_dir or default_state_dir(), "GET", "/status", timeout=30)
    regions = {info["role"]: region for region, info in twin["regions"].items()}
    plan = make_plan(config_file, regions=regions, site=twin["deploy_inputs"])
    return target, plan, status.TwinClients(_endpoints(twin)), twin


def _endpoints(twin: dict[str, Any]) -> dict[str, str]:
    """Each twin region's API endpoint, from its /status."""
    return {region: info["endpoint"] for region, info in twin["regions"].items()}


def _deploy(args: argparse.Namespace) -> int:
    """Exit 0 when every step is deployed (or previewed); 2 when refused before any change or a step failed."""
    from tandem.deploy.plan import run
    from tandem.deploy.sam_target import SamCliTarget

    target, plan, clients, twin = _account(args)
    endpoints = None if twin is None else _endpoints(twin)
    sam_target = SamCliTarget(clients, endpoints=endpoints, profile=args.profile, config_file=plan.config_file)
    print(f"deploying to {target}{' (dry run: change sets only)' if args.dry_run else ''}", flush=True)
    run(plan, sam_target, dry_run=args.dry_run, report=lambda line: print(line, flush=True))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """Exit 0 when automatic failover is armed in both regions, 1 when it is not, 2 when it cannot tell."""
    from tandem import doctor, status

    target, plan, clients, twin = _account(args)
    if twin is None:
        targets, now = list(status.aws_targets(plan.config_file)), time.time()
    else:
        targets, now = status.twin_targets(twin)[1], float(twin["clock"]["now"])
    view = status.collect(clients, targets, target, clock=lambda: now)
    findings = doctor.examine(clients, plan, view, now)
    print(doctor.to_json(findings) if args.json else doctor.describe(findings))
    return 0 if doctor.armed(findings) else 1


def _operate(args: argparse.Namespace) -> int:
    """Exit 0 when the handler did what was asked (or showed the plan / the executions), 1 when it refused or
    an execution failed, 2 when it could not be asked."""
    from tandem import operator

    source, targets = _sources(args)
    answer = operator.run(args.command, source, targets, force=getattr(args, "force", False), region=args.region)
    if args.json:
        shown = operator.executions_json(answer) if args.command == "executions" else answer
        print(json.dumps(shown, indent=2, default=str))
    else:
        print(operator.describe(args.command, answer))
    return 1 if answer.get("outcome") in ("refused", "failed", "partial", "waiting") else 0


def _describe(status: dict[str, Any]) -> str:
    lines = [f"twin ({status.get('startup_seconds', '?')} s to start, clock x{status['clock']['scale']:g})"]
    for region, info in status["regions"].items():
        state = ("up, CUT OFF" if info.get("partitioned") else "up") if info["up"] else "DOWN"
        if info.get("outage") not in (None, "region"):
            state = f"up, {str(info['outage']).upper()} DOWN"
        lines.append(f"  {region:<12} {info['role']:<8} {state:<5} api {info['endpoint']}  db {info['database']}")
    if status.get("promotion_in_progress"):
        moving = status["promotion_in_progress"]
        lines.append(f"  a delayed {moving['mode']} to {moving['to_region']} is in progress")
    return "\n".join(lines)


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM ends a command the way Ctrl-C does, so every cleanup on the way out runs (a twin it started stops)."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command == "drill":
            from tandem.drill import DrillOptions, run, summary
            from tandem.drill.progress import LiveLine
            from tandem.drill.scenarios import ScenarioOptions

            if args.duplicates and not args.transactions:
                raise ValueError("--duplicates needs --transactions > 0 (there is nothing to redeliver)")
            two_region = ScenarioOptions(args.outage_at, args.outage_for, args.producers, args.rate)
            options = DrillOptions(
                args.transactions, args.poison, args.duplicates, args.seed, args.report,
                scenario=args.scenario, two_region=two_region,
            )  # fmt: skip
            with LiveLine() as live:
                report, path = run(options, progress=live)
            print(summary(report, path))
            return 0 if report["passed"] else 1
        if args.command == "twin":
            return _twin(args)
        if args.command == "status":
            return _status(args)
        if args.command == "deploy":
            return _deploy(args)
        if args.command == "doctor":
            return _doctor(args)
        if args.command in OPERATOR_ACTIONS:
            return _operate(args)
        if args.command == "invoke":
            from tandem.invoke import invoke

            response, ok = invoke(args.function, args.event, args.region)
            sys.stdout.flush()
            print(json.dumps(response, sort_keys=True, default=str))
            return 0 if ok else 1
    except KeyboardInterrupt:
        print("tandem: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # TwinNotRunning and DrillError are RuntimeErrors
        print(f"tandem {args.command}: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":
    sys.exit(main())
