"""Shared fixtures: one tiny synthetic D-FAUST dataset, generated and preprocessed once per test session."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run an entry point from the repo root the way a user does; returns the completed process."""
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> dict:
    """2 subjects x 2 sequences x 23 frames -> 3 usable frames per sequence after dropping the first 20."""
    root = tmp_path_factory.mktemp("tiny")
    raw, preprocessed = root / "raw", root / "preprocessed"
    run_script("preprocess/make_synthetic_dfaust.py", "--output-dir", str(raw), "--subjects", "2",
               "--sequences", "2", "--frames", "23", "--seed", "3")
    split_file = raw / "splits.csv"
    run_script("preprocess/preprocess_dfaust.py", "--dataset-dir", str(raw), "--output-dir", str(preprocessed),
               "--split-file", str(split_file), "--workers", "1")
    return {"raw": str(raw), "preprocessed": str(preprocessed), "split_file": str(split_file)}
