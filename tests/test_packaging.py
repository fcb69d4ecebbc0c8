"""The installed distribution is complete and the layers import one way only."""

import ast
import importlib
import importlib.metadata
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ["scripts", "agents", "envs", "models"]  # each may import only those after it


def _source_packages():
    for layer in LAYERS:
        for init in sorted((ROOT / layer).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT)
            yield "hybridgym." + ".".join(rel.parts)


def test_every_subpackage_is_installed_from_the_distribution_not_the_source_tree():
    packages = list(_source_packages())
    assert "hybridgym.envs.systems" in packages
    for name in packages:
        module = importlib.import_module(name)
        path = pathlib.Path(module.__file__).resolve()
        assert not any(path.is_relative_to(ROOT / layer) for layer in LAYERS), (
            f"{name} was imported from the source tree ({path}); the tests must run against a "
            "regular install (make test), and every subpackage must be listed in pyproject.toml"
        )


def test_every_source_module_is_in_the_installed_record():
    dist = importlib.metadata.distribution("hybridgym")
    location = pathlib.Path(str(dist.locate_file(""))).resolve()
    assert location != ROOT, "found the source tree's egg-info, not the installed distribution"
    files = dist.files
    installed = {str(f) for f in files if str(f).endswith(".py")}
    for layer in LAYERS:
        for source in (ROOT / layer).rglob("*.py"):
            rel = source.relative_to(ROOT)
            assert f"hybridgym/{rel.as_posix()}" in installed, f"{rel} is missing from the wheel"


def test_version_comes_from_package_metadata():
    from hybridgym.models import __version__

    assert __version__ == importlib.metadata.version("hybridgym") != "0+unknown"


def _imported_hybridgym_layers(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "hybridgym" and len(parts) > 1:
                yield parts[1]
            elif parts[0] in LAYERS:
                yield f"bare {parts[0]}"


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_flow_downward_only(layer):
    allowed = set(LAYERS[LAYERS.index(layer) :])
    for source in (ROOT / layer).rglob("*.py"):
        for imported in _imported_hybridgym_layers(source):
            assert imported in allowed, (
                f"{source.relative_to(ROOT)} imports {imported!r}; "
                f"{layer} may import only {allowed}"
            )
