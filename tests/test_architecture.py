"""The shape of the code: no import cycles, the core knows no backend, the chat app is a view."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rsdchat"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, TYPE_CHECKING blocks and function bodies included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """rsdchat's modules and the rsdchat modules each one imports."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for target in imports(name, path):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                targets.add(target)
        edges[name] = targets
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle_among_rsdchat_modules() -> None:
    cycles = find_cycles(graph())
    assert not cycles, " ; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_checker_sees_real_imports_and_finds_cycles() -> None:
    edges = graph()
    assert "rsdchat.core.policy" in edges["rsdchat.core.engine"]  # the engine is told its policy
    assert "rsdchat.core.engine" not in edges["rsdchat.core.policy"]
    assert "rsdchat.prompts" in edges["rsdchat.settings"]  # from-imports resolve to modules
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_each_module_imports_on_its_own() -> None:
    """Import every module in a fresh state of rsdchat (other packages stay loaded: it is fast)."""
    script = (
        "import importlib, sys\n"
        f"names = {sorted(modules())!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'rsdchat' or m.startswith('rsdchat.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def names_imported(prefix: str) -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path) for name, path in known.items() if name.startswith(prefix)}


def test_the_core_knows_backends_only_through_plugins() -> None:
    for name, found in names_imported("rsdchat").items():
        backends = {m for m in found if m.startswith(("rsdchat_", "llama_cpp", "httpx", "vllm"))}
        assert not backends, (name, backends)


@pytest.mark.parametrize(
    "prefix", ["rsdchat.chat", "rsdchat.core.engine", "rsdchat.settings", "rsdchat.core.policy"]
)
def test_the_chat_session_and_the_core_need_no_ui(prefix: str) -> None:
    for name, found in names_imported(prefix).items():
        ui = {m for m in found if m.startswith(("textual", "rsdchat.tui"))}
        assert not ui, (name, ui)


def test_settings_and_the_chat_app_do_not_import_the_engine() -> None:
    for prefix in (
        "rsdchat.settings",
        "rsdchat.tui",
        "rsdchat.in_force",
        "rsdchat.chat.choice",
        "rsdchat.chat.commands",
    ):
        for name, found in names_imported(prefix).items():
            assert "rsdchat.core.engine" not in found, name


def test_only_the_app_module_imports_the_app() -> None:
    for name, found in names_imported("rsdchat.tui").items():
        if name not in ("rsdchat.tui", "rsdchat.tui.app"):
            assert "rsdchat.tui.app" not in found, name


STDLIB = set(sys.stdlib_module_names)


def test_the_core_imports_only_the_standard_library_and_itself() -> None:
    """rsdchat.core is the algorithm: no third-party package, no app module (settings, chat, cli)."""
    core = names_imported("rsdchat.core")
    assert len(core) >= 10, sorted(core)  # the checker sees the core's modules
    for name, found in core.items():
        outside = {
            m
            for m in found
            if m.split(".")[0] not in STDLIB and not m.startswith(("rsdchat.core", "__future__"))
        }
        assert not outside, (name, sorted(outside))


def test_the_core_check_fails_on_an_outside_import(tmp_path: Path) -> None:
    module = tmp_path / "engine.py"
    module.write_text(
        "import asyncio\nfrom rsdchat.settings import Settings\nimport pydantic\n", encoding="utf-8"
    )
    found = imports("rsdchat.core.engine", module)
    outside = {m for m in found if m.split(".")[0] not in STDLIB and not m.startswith("rsdchat.core")}
    assert outside == {"rsdchat.settings", "rsdchat.settings.Settings", "pydantic"}


def plugin_imports() -> dict[str, set[str]]:
    """Each backend plugin module (backends/*/rsdchat_*) and the rsdchat modules it imports."""
    found = {}
    for path in sorted(ROOT.glob("backends/*/rsdchat_*/**/*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts[2:])  # backends/NAME/rsdchat_NAME/…
        found[name] = {m for m in imports(name, path) if m == "rsdchat" or m.startswith("rsdchat.")}
    return found


def test_backend_plugins_import_only_the_plugin_api() -> None:
    found = plugin_imports()
    assert len(found) >= 20, sorted(found)  # every plugin's modules are seen
    assert any("rsdchat.plugin_api" in names for names in found.values())
    for name, names in found.items():
        other = {m for m in names if not m.startswith("rsdchat.plugin_api")}
        assert not other, (name, sorted(other))


def test_the_plugin_api_names_only_what_it_exports() -> None:
    import rsdchat.plugin_api as api

    for name in api.__all__:
        assert hasattr(api, name), name
