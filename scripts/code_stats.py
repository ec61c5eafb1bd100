"""Lines per module and the longest functions of a source tree, for comparing layouts.

python scripts/code_stats.py [SRC_DIR] [--top N]"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def functions(path: Path) -> list[tuple[int, str]]:
    """(lines, qualified name) of every function and method in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                found.append((lines, f"{prefix}{child.name}"))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("src", nargs="?", default="src/peftbench", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    files = sorted(p for p in args.src.rglob("*.py"))
    counts = [(len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(args.src))) for p in files]
    print(f"{len(files)} modules, {sum(c for c, _ in counts)} lines; longest {max(counts)[0]}")
    for lines, name in sorted(counts, reverse=True):
        print(f"  {lines:5d}  {name}")
    longest = sorted(((n, f"{p.relative_to(args.src)}:{q}") for p in files for n, q in functions(p)), reverse=True)
    print(f"the {args.top} longest functions:")
    for lines, name in longest[: args.top]:
        print(f"  {lines:5d}  {name}")


if __name__ == "__main__":
    main()
