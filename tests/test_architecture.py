"""The house rules that keep the code livable: the architecture page names what exists,
no module grows past 800 lines (the style guide aims at about 400 and splits by meaning,
never only by size), SQL lives in repositories, SQL files and migrations, and
the task states are the database's."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import asyncpg

from service.catalog.schemas import Status
from service.catalog.statuses import TaskStatus
from service.tasks.states import TRANSITIONS, DispatchState, mermaid_diagram

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "service"
MAX_LINES = 800
REFERENCE = re.compile(r"`(service/[\w/]+\.(?:py|sql))(?:::(\w+))?`")
SQL = re.compile(r"\b(SELECT\s.+\sFROM|UPDATE\s+\w+\s+SET|INSERT\s+INTO|DELETE\s+FROM)\b", re.S)


def defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_the_architecture_page_names_only_files_and_functions_that_exist() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    references = REFERENCE.findall(page)
    assert len(references) > 30  # it is the map of the house: it names many rooms
    missing = [
        f"{file}::{name}" if name else file
        for file, name in references
        if not (ROOT / file).exists() or (name and name not in defined_names(ROOT / file))
    ]
    assert not missing, f"docs/architecture.md names what is gone: {missing}"


def test_no_module_is_over_800_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in SERVICE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these: {long}"


def test_sql_text_lives_in_repositories() -> None:
    """Outside repositories (and the Alembic plumbing in db.py), no string is a query."""
    found = []
    for path in SERVICE.rglob("*.py"):
        if path.name.endswith("repository.py") or path == SERVICE / "platform" / "db.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and SQL.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"SQL outside a repository: {found}"


async def test_the_task_states_are_the_databases(db: asyncpg.Connection) -> None:
    checks = await db.fetch(
        "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint "
        "WHERE conrelid = 'tasks'::regclass AND contype = 'c'"
    )

    def allowed(column: str) -> set[str]:
        """The values of the CHECK that is `column = ANY (ARRAY[...])` and nothing else."""
        for check in checks:
            if check["def"].startswith(f"CHECK (({column} = ANY (ARRAY["):
                return set(re.findall(r"'(\w+)'", check["def"]))
        raise AssertionError(f"no CHECK on tasks.{column}")

    assert allowed("status") == {s.value for s in TaskStatus}
    assert allowed("dispatch_state") == {s.value for s in DispatchState}
    assert set(typing.get_args(Status)) == {s.value for s in TaskStatus}


def test_every_dispatch_state_written_in_sql_is_a_state() -> None:
    """A typo in a WHERE would match nothing, silently: each literal must be a state."""
    words = set()
    for path in SERVICE.rglob("*repository.py"):
        words |= set(re.findall(r"dispatch_state\s*(?:=|<>)\s*'(\w+)'", path.read_text()))
    assert len(words) >= 4  # the check looks at the repositories' SQL
    assert words <= {s.value for s in DispatchState}


def test_every_dispatch_state_is_reachable_and_ends_in_done() -> None:
    reached = {DispatchState.PENDING}
    changed = True
    while changed:
        changed = False
        for source, target in TRANSITIONS:
            if source in reached and target not in reached:
                reached.add(target)
                changed = True
    assert reached == set(DispatchState)
    assert not any(source == DispatchState.DONE for source, _ in TRANSITIONS)


def test_the_readme_draws_the_transition_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"```mermaid\n{mermaid_diagram()}\n```" in readme


def test_answer_shapes_are_data_not_version_branches() -> None:
    """Render, the upstream client and the simulator ask the generation's `Wire`
    (service/catalog/wire.py) how an answer is shaped: none of them names a version, nor
    compares one (`version == "2026-04"`, `gen.version != LATEST`, a table keyed by version)."""
    version_text = re.compile(r"\d{4}-\d{2}")
    version_names = {"LATEST", "DEFAULT_VERSION", "DEFAULT_ANSWER_VERSION", "API_VERSIONS"}

    def named(node: ast.expr) -> str:
        if isinstance(node, ast.Name):
            return node.id
        return node.attr if isinstance(node, ast.Attribute) else ""

    def branches(source: str) -> list[int]:
        found = []
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if version_text.fullmatch(node.value):
                    found.append(node.lineno)
            elif isinstance(node, ast.Compare):
                names = [named(side) for side in (node.left, *node.comparators)]
                if any(n.lower().endswith("version") or n in version_names for n in names):
                    found.append(node.lineno)
        return found

    # The detector sees each way a version branch has been written here before.
    for written in (
        'current = version != "2026-04"',
        "if version == DEFAULT_VERSION: pass",
        "x = gen.version == LATEST",
        'TTL = {"2026-04": 1, "2026-09": 7}',
        "match api_version:\n    case '2026-09': pass",
        "ok = self.config.api_version in API_VERSIONS",
    ):
        assert branches(written), written
    assert not branches('wire = generation(version).wire\nok = wire.time_unit == "ms"')

    scope = [SERVICE / "tasks" / "render.py"]
    scope += sorted((SERVICE / "upstream").rglob("*.py"))
    scope += sorted((SERVICE / "simulator").rglob("*.py"))
    assert len(scope) >= 10
    found = [
        f"{path.relative_to(ROOT)}:{line}" for path in scope for line in branches(path.read_text())
    ]
    assert not found, f"a branch on the API version (ask the generation's Wire): {found}"
