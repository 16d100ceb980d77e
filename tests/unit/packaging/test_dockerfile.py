"""The image ships what the package ships: the Dockerfile copies every source the wheel
is built from, the wheel contains every module of both import packages and both console
scripts, and the runtime stage is non-root. (No Docker engine here: the wheel the
Dockerfile's build stage would produce is built with pip instead.)"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    out = []
    for line in DOCKERFILE.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest))
    return out


def test_dockerfile_is_multi_stage_non_root_with_both_entrypoints() -> None:
    ins = _instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    last_stage = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
    users = [rest for word, rest in last_stage if word == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "runtime runs as non-root"
    assert any(w == "ENTRYPOINT" and "stagecoach" in r for w, r in last_stage)


def test_dockerfile_copies_every_source_the_package_is_built_from() -> None:
    copied = {src.rstrip("/") for word, rest in _instructions() if word == "COPY"
              and "--from" not in rest for src in rest.split()[:-1]}
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", meta["project"]["readme"]}
    for where in meta["tool"]["setuptools"]["packages"]["find"]["where"]:
        needed.add(where.split("/")[0])
    assert needed <= copied, f"missing from the Dockerfile: {needed - copied}"


def test_wheel_contains_every_module_and_both_console_scripts(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, timeout=300)
    [wheel] = tmp_path.glob("stagecoach-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for src in ("operator/src", "stage-runner/src"):
        for module in (ROOT / src).rglob("*.py"):
            rel = module.relative_to(ROOT / src).as_posix()
            assert rel in names, f"{rel} is not in the wheel"
        for typed in (ROOT / src).rglob("py.typed"):
            assert typed.relative_to(ROOT / src).as_posix() in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert re.search(r"^stagecoach = stagecoach\.cli\.main:main$", text, re.M)
    assert re.search(r"^stagecoach-runner = stagecoach_runner\.__main__:main$", text, re.M)
