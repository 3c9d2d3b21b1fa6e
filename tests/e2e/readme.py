"""The README's shell examples, read from the README itself: each command as written
(continuation lines joined) with the comment lines shown right after it, which are what it
answers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_TASK_ID = "task-2cc4..."


@dataclass(frozen=True)
class Example:
    command: str
    said_before: list[str] = field(default_factory=list)  # the comments that introduce it
    said_after: list[str] = field(default_factory=list)  # the comments that show its answer

    def with_task_id(self, task_id: str) -> Example:
        return replace(self, command=self.command.replace(EXAMPLE_TASK_ID, task_id))

    def is_cli(self) -> bool:
        return self.command.startswith("qingbo-gateway ")

    def announces(self, code: str) -> bool:
        """Whether the comments before it say this error can be the answer."""
        said = " ".join(self.said_before)
        return code in said or any(status in said for status in _STATUS_OF.get(code, ()))

    def expected_json(self) -> Any:
        """The answer shown, when it is one whole JSON document (no "...")."""
        text = " ".join(expected_lines(self))
        try:
            return json.loads(text)
        except ValueError:
            return None

    @staticmethod
    def parse_json(output: str) -> Any:
        try:
            return json.loads(output)
        except ValueError:
            return None

    def cli_patterns(self) -> list[str]:
        """The CLI's lines shown, as patterns: the task id and byte counts vary; the live
        progress bar and the upstream link are left out (not a terminal, a link)."""
        patterns = []
        for line in expected_lines(self):
            if "━" in line or "https://..." in line:
                continue
            pattern = re.escape(line.split("  (", 1)[0].rstrip())
            pattern = re.sub(r"task\\-[0-9a-f]+\\\.\\\.\\\.", r"task-[\\w-]+", pattern)
            pattern = re.sub(r"\\\(\d+\\ bytes\\\)", r"\\(\\d+\\ bytes\\)", pattern)
            patterns.append(pattern)
        return patterns


_STATUS_OF = {"not_cancellable": ("409",)}
_ASSIGNMENT = re.compile(r"^[A-Z]+=\S+\s*(#.*)?$")


def expected_lines(example: Example) -> list[str]:
    return [line.removeprefix("#").strip().removeprefix("-> ") for line in example.said_after]


def expected_keys(example: Example) -> set[str]:
    return set(re.findall(r'"([a-z_]+)":', " ".join(expected_lines(example))))


def _blocks(section: str) -> list[str]:
    text = README.read_text("utf-8")
    marker = f"\n## {section}\n"
    assert marker in text, f"README has no section {section!r}"
    body = text.split(marker, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", body, re.S)


def examples(section: str) -> list[Example]:
    """Every command of the section's bash blocks, in order (variable assignments, which
    the test makes itself, left out)."""
    found: list[Example] = []
    for block in _blocks(section):
        lines = block.splitlines()
        before: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                before = []
                i += 1
                continue
            if line.startswith("#"):
                before.append(line)
                i += 1
                continue
            command = line
            while command.endswith("\\"):
                i += 1
                command = command + "\n" + lines[i]
            i += 1
            after = []
            while i < len(lines) and lines[i].startswith("#"):
                after.append(lines[i])
                i += 1
            # A comment on the command's own line, as "cmd   # what it does", is a note.
            command = re.sub(r"\s+#\s.*$", "", command)
            if not _ASSIGNMENT.match(command):
                found.append(Example(command.strip(), before, after))
            before = []
    return found
