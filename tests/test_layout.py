"""The import graph points one way: scripts import packages, never the reverse; common/ is the floor."""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = {"train", "test", "utils.demo", "utils.plot_training", "utils.result_visualization",
           "preprocess.preprocess_dfaust", "preprocess.make_synthetic_dfaust"}
PACKAGES = ("common", "data", "evaluation", "losses", "models", "preprocess", "rendering", "utils")
FORBIDDEN = {  # package -> top-level names it must not import
    "common": {"config", "checkpoint", "data", "evaluation", "losses", "models", "preprocess", "rendering", "utils"},
    "models": {"data", "preprocess", "evaluation", "checkpoint", "rendering", "utils"},
    "losses": {"data", "preprocess", "evaluation", "checkpoint", "rendering", "utils"},  # models.prediction is its input
    "data": {"models", "losses", "evaluation", "checkpoint", "utils"},
}


def imports_of(path: pathlib.Path) -> set[str]:
    """Dotted names of every module `path` imports (absolute imports; the repo uses no relative ones)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def package_modules():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if module not in SCRIPTS:
                yield package, module, path


@pytest.mark.parametrize("package, module, path", list(package_modules()), ids=lambda value: str(value))
def test_packages_import_no_script_and_respect_their_layer(package, module, path):
    imported = imports_of(path)
    assert not imported & SCRIPTS, f"{module} imports a script: {imported & SCRIPTS}"
    tops = {name.split(".")[0] for name in imported}
    assert not tops & FORBIDDEN.get(package, set()), f"{module} imports {tops & FORBIDDEN[package]}"


def test_no_file_edits_sys_path():
    offenders = [str(path.relative_to(REPO)) for path in REPO.rglob("*.py")
                 if ".venv" not in path.parts and "sys.path.insert" in path.read_text()
                 and path.name != "test_layout.py"]
    assert offenders == []
