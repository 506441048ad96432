"""`tandem`: the operator CLI (drill, invoke). Errors are one clear line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tandem.lambda_runtime import HANDLERS


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    drill = sub.add_parser("drill", help="run the seeded workload through the local region and audit it")
    drill.add_argument("--transactions", type=_non_negative, default=200, help="distinct valid transactions")
    drill.add_argument("--poison", type=_non_negative, default=5, help="extra invalid messages")
    drill.add_argument("--duplicates", type=_non_negative, default=20, help="redeliveries of sent valid messages")
    drill.add_argument("--seed", type=int, default=1)
    drill.add_argument("--region", default="us-east-1")
    drill.add_argument("--report", type=Path, help="where to write the JSON report (default reports/drill-*.json)")

    invoke = sub.add_parser("invoke", help="run one function with an event file, Docker-free")
    invoke.add_argument("function", choices=sorted(HANDLERS))
    invoke.add_argument("event", type=Path)
    invoke.add_argument("--region", default="us-east-1")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "drill":
            from tandem.drill import DrillOptions, run, summary

            if args.duplicates and not args.transactions:
                raise ValueError("--duplicates needs --transactions > 0 (there is nothing to redeliver)")
            report, path = run(
                DrillOptions(args.transactions, args.poison, args.duplicates, args.seed, args.region, args.report)
            )
            print(summary(report, path))
            return 0 if report["passed"] else 1
        if args.command == "invoke":
            from tandem.invoke import invoke

            response, ok = invoke(args.function, args.event, args.region)
            sys.stdout.flush()
            print(json.dumps(response, sort_keys=True, default=str))
            return 0 if ok else 1
    except KeyboardInterrupt:
        print("tandem: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"tandem {args.command}: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":
    sys.exit(main())
