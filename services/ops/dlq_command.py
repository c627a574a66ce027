"""``pwasync dlq list|show|replay|purge``: the operator's view of dead letters."""

from __future__ import annotations

import argparse
import json
import sys

from common.errors import ConfigError
from common.rabbit import RabbitConnector
from common.settings import Settings
from common.topology import topology_for
from services.ops.dead_letters import DeadLetter, DeadLetterBox


def run_dlq(settings: Settings, args: argparse.Namespace) -> int:
    box = DeadLetterBox(
        RabbitConnector(settings.amqp_url.get_secret_value(), connection_name="pwasync-cli"),
        topology_for(settings.scenario),
    )
    action = args.dlq_action
    if action == "list":
        letters = box.list()
        if args.json:
            print(json.dumps([letter.summary() for letter in letters]))
        else:
            print(_table(letters))
        return 0
    if action == "show":
        print(_show(box.find(args.id)))
        return 0
    if action == "replay":
        replayed = box.replay(None if args.all else args.id)
        for letter in replayed:
            print(f"replayed {letter.id} into {letter.source_queue}")
        print(f"{len(replayed)} dead letter(s) replayed")
        return 0
    if action == "purge":
        count = len(box.list())
        if not args.yes and not _confirmed(count):
            raise ConfigError("dlq purge deletes dead letters for good: add --yes to confirm")
        print(f"{box.purge()} dead letter(s) purged")
        return 0
    raise ConfigError(f"unknown dlq action {action!r}")


def _table(letters: list[DeadLetter]) -> str:
    if not letters:
        return "no dead letters"
    lines = [
        f"{len(letters)} dead letter(s):",
        f"{'id':12}  {'dead at (UTC)':19}  {'queue':40}  reason",
    ]
    for letter in letters:
        dead_at = (letter.dead_at or "")[:19].replace("T", " ")
        lines.append(f"{letter.id:12}  {dead_at:19}  {letter.source_queue:40}  {letter.reason}")
    return "\n".join(lines)


def _show(letter: DeadLetter) -> str:
    try:
        body = json.dumps(json.loads(letter.body), indent=2, ensure_ascii=False)
    except ValueError:
        body = letter.body.decode("utf-8", "replace")
    headers = "\n".join(f"  {k}: {v}" for k, v in sorted(letter.headers.items()))
    return "\n".join(
        [
            f"id:             {letter.id}",
            f"queue:          {letter.source_queue}",
            f"reason:         {letter.reason}",
            f"dead at:        {letter.dead_at}",
            f"attempts:       {letter.attempts}",
            f"message id:     {letter.message_id}",
            f"correlation id: {letter.correlation_id}",
            "headers:",
            headers,
            "body:",
            body,
        ]
    )


def _confirmed(count: int) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(f"purge {count} dead letter(s) for good? [y/N] ")
    return answer.strip().lower() in ("y", "yes")
