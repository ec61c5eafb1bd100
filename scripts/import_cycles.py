"""Print the package's import graph's cycles: every import counted, at module level or inside a function.

    python scripts/import_cycles.py [package]

A cycle is a strongly connected component of two or more modules (grimp reads every import statement of a
module, wherever it stands). Exit status 1 when there is one."""

from __future__ import annotations

import sys

import grimp


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively (the graph is small, but recursion limits are not worth a thought)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def main(package: str = "peftbench") -> int:
    graph = grimp.build_graph(package, cache_dir=None)
    nodes = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & nodes for m in nodes}
    imports = sum(len(targets) for targets in edges.values())
    cycles = [c for c in strongly_connected(nodes, edges) if len(c) > 1]
    print(
        f"{package}: {len(nodes)} modules, {imports} imports between them (module and function level), {len(cycles)} "
        "cycle(s)"
    )
    for members in cycles:
        print(f"  cycle of {len(members)}: {', '.join(m.removeprefix(package + '.') for m in members)}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
