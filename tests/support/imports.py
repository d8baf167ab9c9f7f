"""What a module imports, read from its source: a pure module must reach no I/O.

Importing a module of the package to look at ``sys.modules`` would run the package's
``__init__.py``, which imports trio; so the imports are read by AST instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

#: What a pure module may not import, directly or through the package's own modules.
FORBIDDEN = frozenset({"trio", "socket", "ssl", "select"})


def imported_modules(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Top-level names of every module ``path`` imports, following the imports of its own
    package (relative, or absolute by the package's name) into their modules, transitively.

    An import anywhere counts: in a function, under ``if TYPE_CHECKING:``. A package's
    ``__init__.py`` is followed only where something is taken from it (``from . import name``
    with no module ``name``), not because a module of the package is imported: that runs it
    too, but the rule is about what the module itself needs.
    """
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    package = _package_dir(path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name.split(".")[0])
                if package is not None and alias.name.split(".")[0] == package.name:
                    for file in _files_of(package.parent, alias.name.split(".")):
                        names |= imported_modules(file, seen)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                names.add(node.module.split(".")[0])
                if package is None or node.module.split(".")[0] != package.name:
                    continue
                base = package.parent
            else:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
            parts = node.module.split(".") if node.module else []
            for file in _files_of(base, parts, [alias.name for alias in node.names]):
                names |= imported_modules(file, seen)
    return names


def _package_dir(path: Path) -> Path | None:
    """The folder of the top-level package that ``path`` is a module of, if any."""
    if not (path.parent / "__init__.py").exists():
        return None
    top = path.parent
    while (top.parent / "__init__.py").exists():
        top = top.parent
    return top


def _files_of(base: Path, parts: list[str], taken: list[str] | None = None) -> list[Path]:
    """The files an import of ``parts`` under ``base`` runs for the module itself, and for
    each name ``taken`` from it (``from parts import taken``): its submodule, or else the
    package's ``__init__.py`` that defines it."""
    target = base.joinpath(*parts)
    if parts and target.with_suffix(".py").is_file():
        return [target.with_suffix(".py")]
    init = target / "__init__.py"
    if not init.is_file():
        return []  # not a module of the package (a name it cannot resolve is Python's to refuse)
    if taken is None:
        return [init]
    files: list[Path] = []
    for name in taken:
        submodule = _files_of(target, [name])
        files += submodule or [init]
    return files
