"""Each side stands alone: ground never imports the laptop client, nor onboard ground.

What both need lives in packages named for what they hold (durable/, photocodec/, termtext/, protocol/);
protocol/ stays sans-IO and imports neither side.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "ground": {"onboard"},
    "onboard": {"ground"},
    "protocol": {"onboard", "ground", "durable", "photocodec", "asyncio", "socket", "aiohttp"},
    "durable": {"onboard", "ground"},
    "verifier": {"onboard", "ground"},
    "photocodec": {"onboard", "ground"},
    "termtext": {"onboard", "ground"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package: str) -> None:
    bad = {
        f"{p.relative_to(REPO)} imports {name}"
        for p in (REPO / package).rglob("*.py")
        for name in _imports(p) & FORBIDDEN[package]
    }
    assert not bad, sorted(bad)
