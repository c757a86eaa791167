"""The folders say the import names: pyproject's package table, mypy's roots and the tree agree."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())


def packages_on_disk() -> dict[str, str]:
    """Every package under a `<folder>/inferno/`, by import name -> its folder."""
    found = {}
    inits = [
        i for top in ("libs", "services") for i in ROOT.glob(f"{top}/*/inferno/**/__init__.py")
    ]
    for init in inits:
        folder = init.parent.relative_to(ROOT)
        parts = folder.parts
        found[".".join(parts[parts.index("inferno") :])] = str(folder)
    return found


def test_the_package_table_lists_every_package_at_the_folder_its_name_says():
    table = CONFIG["tool"]["setuptools"]["package-dir"]
    assert table == packages_on_disk()
    assert sorted(CONFIG["tool"]["setuptools"]["packages"]) == sorted(table)
    for name, folder in table.items():
        assert folder.endswith("/".join(name.split("."))), (name, folder)


def test_mypy_reads_every_folder_that_holds_a_part_of_inferno():
    roots = {
        str(Path(folder).parents[len(name.split(".")) - 1])
        for name, folder in CONFIG["tool"]["setuptools"]["package-dir"].items()
    }
    assert set(CONFIG["tool"]["mypy"]["mypy_path"]) == roots


def test_from_inferno_import_client_and_services_do_not_load_the_sdk():
    code = (
        "import sys, inferno.api.app, inferno.executor.service, inferno.scheduler.service\n"
        "assert 'inferno.client.sdk' not in sys.modules, 'a service imported the SDK'\n"
        "from inferno import Client\n"
        "print(Client.__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "inferno.client.sdk"
