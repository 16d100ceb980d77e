"""The lazy package exports of ``stagecoach.api`` and ``stagecoach.engine`` (see
:mod:`stagecoach._lazy`): the table, ``__all__`` and the ``TYPE_CHECKING`` imports name
the same things, every name resolves to its module's object, and ``validate`` does not
import what it never uses."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from types import ModuleType

import pytest
from stagecoach._lazy import lazy_exports

PACKAGES = ["stagecoach.api", "stagecoach.engine"]


def _type_checking_imports(package: ModuleType) -> dict[str, list[str]]:
    tree = ast.parse(inspect.getsource(package))
    found: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.level == 1 and imp.module
                found[imp.module] = [a.name for a in imp.names if a.asname is None]
    return found


@pytest.mark.parametrize("name", PACKAGES)
def test_table_all_and_type_checking_imports_agree(name: str) -> None:
    package = importlib.import_module(name)
    table = {module: list(names) for module, names in package._EXPORTS.items()}
    assert _type_checking_imports(package) == table
    assert sorted(package.__all__) == sorted(n for names in table.values() for n in names)
    assert len(package.__all__) == len(set(package.__all__))


@pytest.mark.parametrize("name", PACKAGES)
def test_every_export_is_its_modules_object(name: str) -> None:
    package = importlib.import_module(name)
    for module, names in package._EXPORTS.items():
        sub = importlib.import_module(f"{name}.{module}")
        for export in names:
            assert getattr(package, export) is getattr(sub, export), (module, export)
    assert set(package.__all__) <= set(dir(package))


def test_an_unknown_name_is_an_attribute_error() -> None:
    import stagecoach.engine

    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        _ = stagecoach.engine.nothing_here  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        from stagecoach.api import NotAModel  # type: ignore[attr-defined]  # noqa: F401


def test_an_export_named_like_a_submodule_is_refused() -> None:
    # importing that submodule would rebind the package attribute from the name to it
    with pytest.raises(ValueError, match="named like a submodule: plan"):
        lazy_exports("pkg", {"plan": ("plan", "step")}, {})


def test_validate_imports_no_planner() -> None:
    code = ("import sys\nfrom stagecoach.cli.main import main\n"
            "code = main(['validate', 'examples/research-report/pipeline.yaml'])\n"
            "assert code == 0, code\n"
            "loaded = [m for m in ('stagecoach.engine.planner', 'stagecoach.engine.actions',"
            " 'stagecoach.engine.policies', 'stagecoach.api.attempt', 'httpx2', 'kopf')"
            " if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    root = __file__.rsplit("/tests/", 1)[0]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_a_local_run_does_not_load_the_s3_client() -> None:
    # obstore is a native extension that takes ~50 ms to load; only an S3 store needs it
    code = ("import sys\nimport stagecoach.cli.run, stagecoach.store\n"
            "from stagecoach.store import S3Store\n"
            "assert 'obstore' not in sys.modules, 'obstore loaded'\n"
            "from obstore.store import MemoryStore\n"
            "import asyncio\n"
            "s = S3Store('b', object_store=MemoryStore())\n"
            "asyncio.run(s.put('k', b'v'))\n"
            "assert asyncio.run(s.get('k')) == b'v'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
