"""The README and docs/ stay true to the code: every file path, dotted code reference,
`python -m` module and link in them resolves."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = tuple(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])

CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCED_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOTTED = re.compile(r"^([a-z_]+)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?:\(\))?$")
RUN_MODULE = re.compile(r"-m ([a-z_][a-z0-9_.]*)")
PATH = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*/?$")


def _top_level_names() -> set[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {line.split("/", 1)[0] for line in listed.splitlines()}


def _resolves(dotted: str) -> bool:
    """An importable module, or an attribute reached from the longest importable prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def broken_references(text: str, *, page_dir: Path, root: Path, top_level: set[str]) -> list[str]:
    broken: list[str] = []
    spans = CODE_SPAN.findall(FENCED_BLOCK.sub("", text)) + FENCED_BLOCK.findall(text)
    for span in spans:
        for module in RUN_MODULE.findall(span):
            if module.split(".")[0] in PACKAGES and importlib.util.find_spec(module) is None:
                broken.append(f"python -m {module}")
        span = span.strip()
        dotted = DOTTED.match(span)
        if dotted and dotted.group(1) in PACKAGES and not _resolves(span.removesuffix("()")):
            broken.append(span)
        elif "/" in span and PATH.match(span) and span.split("/")[0] in top_level and not (root / span).exists():
            broken.append(span)
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue
        if not (page_dir / target.split("#")[0]).exists():
            broken.append(f"link {target}")
    return broken


def test_the_checker_finds_what_does_not_exist() -> None:
    sample = (
        "`routing/gateway/app.py`, `routing.gateway.app.build_gateway()`, `python -m modelserver`, [a](docs/architecture.md)\n"
        "`routing/gateway.py`, `routing.gateway.app.no_such_thing`, `billing.no_such_module`, [b](docs/nowhere.md)\n"
        "```bash\npython -m benchmarks.nowhere\n```\n"
    )
    found = broken_references(sample, page_dir=ROOT, root=ROOT, top_level=_top_level_names())
    assert found == [
        "routing/gateway.py",
        "routing.gateway.app.no_such_thing",
        "billing.no_such_module",
        "python -m benchmarks.nowhere",
        "link docs/nowhere.md",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_reference_resolves(page: Path) -> None:
    assert broken_references(page.read_text(), page_dir=page.parent, root=ROOT, top_level=_top_level_names()) == []


def test_the_readme_fits_on_a_screen_and_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 80
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
