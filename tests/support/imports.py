"""What a module imports, read from its source: a pure module must reach no I/O.

Importing a module of the package to look at ``sys.modules`` would run the package's
``__init__.py``, which imports trio; so the imports are read by AST instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

#: What a pure module may not import, directly or through the package's own modules.


FORBIDDEN = {"trio", "socket", "ssl", "select"}


def imported_modules(path: Path, seen: set[Path]) -> set[str]:
    """Top-level names of every module ``path`` imports, following package-relative imports."""
    if path in seen:
        return set()
    seen.add(path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                names.add(node.module.split(".")[0])
                continue
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            targets = [node.module] if node.module else [alias.name for alias in node.names]
            for target in targets:
                module = base.joinpath(*target.split("."))
                for candidate in (module.with_suffix(".py"), module / "__init__.py"):
                    if candidate.exists():
                        names |= imported_modules(candidate, seen)
    return names
