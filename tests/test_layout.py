"""The package's shape, read from the source (ast): each concern is imported by its public
names, and tests take their data makers from ``daisy_upstream.testing``.

* no module imports a private name (``_x``) from a module of another sub-package (the
  checkpoint format once leaked ``_AUTHORS_HEAD`` / ``_split_authors_heads`` to training);
* ``daisy_upstream.core`` imports nothing else of ours (what ``-u daisy_hubert`` needs);
* no test module imports another test module (``tests.*``).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "daisy_upstream"


def imports(path: Path) -> Iterator[Tuple[str, str, int]]:
    """``(module imported from, name, line)`` of every ``from ... import`` in ``path``, absolute."""
    package = list(path.relative_to(REPO).with_suffix("").parts)[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                yield module, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, "", node.lineno


def subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def offending(folder: Path, bad) -> List[str]:
    """``path:line imports name from module`` for every import below ``folder`` that ``bad(path, module, name)``."""
    return [
        f"{path.relative_to(REPO)}:{line} imports {name or module}{f' from {module}' if name else ''}"
        for path in folder.rglob("*.py")
        for module, name, line in imports(path)
        if bad(path, module, name)
    ]


def test_no_private_name_crosses_subpackages():
    def crossing(path, module, name):
        mine = subpackage(".".join(path.relative_to(REPO).with_suffix("").parts))
        return module.startswith("daisy_upstream.") and name.startswith("_") and subpackage(module) != mine

    assert offending(PACKAGE, crossing) == []


def test_core_imports_nothing_else_of_ours():
    assert (
        offending(
            PACKAGE / "core",
            lambda path, module, name: (
                module.startswith("daisy_upstream.") and not module.startswith("daisy_upstream.core")
            ),
        )
        == []
    )


def test_no_test_imports_another_test_module():
    assert offending(REPO / "tests", lambda path, module, name: module == "tests" or module.startswith("tests.")) == []


def test_the_checks_see_what_they_look_for():
    # the ast reading resolves relative imports and finds a private name (not vacuous)
    found = {(m, n) for f in ("stage1.py", "stage1_loop.py") for m, n, _ in imports(PACKAGE / "training" / f)}
    assert ("daisy_upstream.training.batch_feed", "batch_loader") in found
    assert ("daisy_upstream.core.checkpoint", "with_branches") in found
