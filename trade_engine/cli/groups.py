"""``trade-engine groups list|describe|rewind``: consumer groups and their offsets.

Exit codes: 0 done; 1 refused (the group is active, or it is the matcher's);
2 no such group, topic or partition, or the broker could not be read.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from trade_engine.config import Settings

if TYPE_CHECKING:
    from trade_engine.operations.groups import GroupDescription, Groups, RewindPlan


def _table(rows: list[list[str]], right: Collection[int] = ()) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def _run(settings: Settings, work: Callable[[Groups], int]) -> int:
    from trade_engine.operations.groups import Groups, GroupsError
    from trade_engine.operations.lag import LagError

    groups = Groups(settings)
    try:
        return work(groups)
    except GroupsError as exc:
        print(f"groups: {exc}", file=sys.stderr)
        return exc.exit_code
    except LagError as exc:
        print(f"groups: {exc}", file=sys.stderr)
        return 2
    finally:
        groups.close()


def _cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    def work(groups: Groups) -> int:
        listing = groups.listing(args.group)
        if args.json:
            print(json.dumps([item.as_dict() for item in listing]))
            return 0
        rows = [["GROUP", "STAGE", "STATE", "MEMBERS", "TOPICS"]]
        for item in listing:
            info = item.info
            rows.append(
                [
                    info.group,
                    info.stage or "-",
                    info.state,
                    str(info.members),
                    ",".join(item.topics) or "-",
                ]
            )
        print("\n".join(_table(rows, {3})) if listing else "no consumer groups")
        return 0

    return _run(settings, work)


def _render_description(d: GroupDescription) -> list[str]:
    stage = f" (stage {d.stage})" if d.stage else ""
    lines = [
        f"group {d.group}{stage}: {d.state}, {len(d.members)} member(s)"
        + (f", assignor {d.assignor}" if d.assignor else "")
        + (f", coordinator {d.coordinator}" if d.coordinator else "")
    ]
    if d.members:
        rows = [["MEMBER", "CLIENT_ID", "HOST", "INSTANCE", "ASSIGNMENT"]]
        for m in d.members:
            by_topic: dict[str, list[int]] = {}
            for topic, partition in m.assignment:
                by_topic.setdefault(topic, []).append(partition)
            assignment = " ".join(
                f"{t}[{','.join(map(str, ps))}]" for t, ps in sorted(by_topic.items())
            )
            rows.append([m.member_id, m.client_id, m.host, m.instance_id or "-", assignment or "-"])
        lines += _table(rows)
    if not d.partitions:
        lines.append("no committed offsets")
        return lines
    rows = [["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "LAG_S", "STATUS"]]
    for p in d.partitions:
        item = p.lag
        rows.append(
            [
                item.topic,
                str(item.partition),
                str(item.committed) if item.committed >= 0 else "none",
                str(item.end),
                str(item.lag),
                f"{item.lag_seconds:.1f}",
                p.status.name,
            ]
        )
    lines += _table(rows, {1, 2, 3, 4, 5})
    lines.append(
        "status from one sample (only STOPPED or OK): `trade-engine lag` judges over a window"
    )
    return lines


def _cmd_describe(args: argparse.Namespace, settings: Settings) -> int:
    def work(groups: Groups) -> int:
        description = groups.describe(args.group)
        if args.json:
            print(json.dumps(description.as_dict()))
        else:
            print("\n".join(_render_description(description)))
        return 0

    return _run(settings, work)


def _render_plan(plan: RewindPlan) -> list[str]:
    what = (
        "offsets moved"
        if plan.executed
        else "dry run: nothing changed; add --execute to move the offsets"
    )
    lines = [f"group {plan.group} on {plan.topic}, {plan.target.describe()} ({what})"]
    rows = [["PARTITION", "BEFORE", "AFTER", "MOVE", "NOTE"]]
    for m in plan.moves:
        rows.append(
            [
                str(m.partition),
                "none" if m.before is None else str(m.before),
                str(m.after),
                "-" if m.delta is None else f"{m.delta:+d}",
                m.note,
            ]
        )
    return lines + _table(rows, {0, 1, 2, 3})


def _cmd_rewind(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.operations.groups import Target

    if args.to_offset is not None:
        target = Target("offset", args.to_offset)
    elif args.to_time is not None:
        target = Target("time", args.to_time)
    elif args.by is not None:
        target = Target("by", args.by)
    else:
        target = Target("earliest" if args.to_earliest else "latest")

    def work(groups: Groups) -> int:
        plan = groups.plan_rewind(
            args.group, args.topic, target, partition=args.partition, force=args.force
        )
        if args.execute:
            plan = groups.execute(plan)
        if args.json:
            print(json.dumps(plan.as_dict()))
        else:
            print("\n".join(_render_plan(plan)))
        return 0

    return _run(settings, work)


def _regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {exc}") from None


def _time(text: str) -> int:
    from trade_engine.operations.groups import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_group_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    groups = sub.add_parser("groups", help="consumer groups: list, describe, rewind offsets")
    gsub = groups.add_subparsers(dest="groups_command", required=True)

    listing = gsub.add_parser("list", help="every consumer group: stage, state, members, topics")
    listing.add_argument("--group", type=_regex, metavar="REGEX", help="only groups matching")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_cmd_list)

    describe = gsub.add_parser(
        "describe", help="a group's members, assignment and lag per partition"
    )
    describe.add_argument("group")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(handler=_cmd_describe)

    rewind = gsub.add_parser(
        "rewind",
        help="move a stopped group's committed offsets on a topic (dry run unless --execute)",
        description="Move GROUP's committed offsets on TOPIC, every partition or one. A dry "
        "run unless --execute: prints each partition's offset before and after. Refused while "
        "the group has members (stop its workers first). Targets out of range are clamped to "
        "the earliest offset or the last stable offset. Exit 0 done, 1 refused, 2 no such "
        "topic/partition or the broker could not be read.",
    )
    rewind.add_argument("group")
    rewind.add_argument("--topic", required=True)
    target = rewind.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-offset", type=int, metavar="N", help="offset N")
    target.add_argument(
        "--to-time",
        type=_time,
        metavar="ISO8601",
        help="the first record at or after this time (e.g. 2024-05-01T12:00:00Z; no zone: UTC)",
    )
    target.add_argument(
        "--by", type=int, metavar="N", help="shift the committed offset by N (-N: rewind)"
    )
    target.add_argument("--to-earliest", action="store_true", help="the log start")
    target.add_argument(
        "--to-latest", action="store_true", help="the end a read_committed reader sees"
    )
    rewind.add_argument("--partition", type=int, metavar="P", help="only partition P")
    rewind.add_argument("--execute", action="store_true", help="move the offsets (else dry run)")
    rewind.add_argument(
        "--force",
        action="store_true",
        help="allow the matcher's group (see docs/runbooks/replay.md)",
    )
    rewind.add_argument("--json", action="store_true")
    rewind.set_defaults(handler=_cmd_rewind)
