"""Faults and bad input across the pipeline: kills, full or read-only disks, damaged files, NaNs, unsafe pickles.

What a user must see for every bad input: one line `error: ...` naming the file or value and what to do, exit
status 2, and everything already written intact. docs/faults.md lists every case with the test behind it (some
live in test_preprocess.py, test_synthetic_dfaust.py, test_config.py, test_model*.py, test_train_test_export.py).

Entry points run either as subprocesses (`run_script`, the user's exact view) or in-process through
`common.errors.run_main` where a fault is injected with monkeypatch (a full disk, a NaN loss, a poisoned update).
"""
import ast
import builtins
import csv
import errno
import importlib.util
import io
import math
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import config as config_module
import train
from data.dataset import FrameDataset
from data.splits import read_split_file
from models.neural_parts import NeuralParts
from preprocess import pipeline
from tests.analytic_dfaust import body_mesh, moving_sequence, write_registrations, write_split
from tests.conftest import REPO, run_script
from tests.test_train_test_export import TINY
from utils import result_visualization
from checkpoint import CHECKPOINT_VERSION, load_checkpoint, load_model, save_checkpoint
from common.errors import UserError, run_main

STEPS = 10  # the killed training run; TINY writes model.pth every 2 steps and validates only at the last step
CHECKPOINTS = {"model.pth", "best_model.pth", "best_chamfer_model.pth"}


def _load_script(name: str, path: str):
    """Import an entry-point script as a module (test.py would clash with the standard library's `test`)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluation_script = _load_script("test_script", "test.py")


# --- helpers ---------------------------------------------------------------------------------------------

def set_flags(steps: int, *overrides: str) -> list[str]:
    """--set flags of the tiny training config (tests/test_train_test_export.py) for `steps` steps."""
    return [flag for item in TINY + [f"train.steps={steps}", *overrides] for flag in ("--set", item)]


def data_args(tiny_dataset) -> list[str]:
    return ["--data-dir", tiny_dataset["preprocessed"], "--split-file", tiny_dataset["split_file"]]


def train_args(tiny_dataset, run_dir, steps: int, *overrides: str) -> list[str]:
    return [*data_args(tiny_dataset), "--output-dir", str(run_dir), *set_flags(steps, *overrides)]


def run_entry(main, argv: list[str], capsys) -> tuple[int, str]:
    """Run an entry point in this process the way `python3 script.py` does; returns (exit status, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_main(lambda: main(argv))
    return exited.value.code, capsys.readouterr().err


def assert_one_line_error(status: int, stderr: str, *fragments: str, only_line: bool = False) -> str:
    """Exit status 2, no traceback, exactly one `error: ...` line holding every fragment.

    A failure while a progress bar is drawn prints the error right after the bar's last state (see docs/faults.md);
    only_line: stderr is the error line and nothing else (a failure before any progress bar starts).
    """
    assert status == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = re.findall(r"error: [^\r\n]*", stderr)
    assert len(errors) == 1, stderr
    if only_line:
        assert stderr == errors[0] + "\n", stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


def log_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv", newline="") as file:
        return list(csv.DictReader(file))


def finite_weights(payload: dict) -> bool:
    return all(torch.isfinite(value).all() for value in payload["model"].values() if value.is_floating_point())


class BrokenDisk:
    """Files opened for writing below `root` fail once `broken()` is true, as on a full or read-only disk.

    ENOSPC: the first write reaches the file halfway and then raises, as a filling disk does. EROFS: opening
    raises. Covers builtins.open (json, csv, PIL, trimesh, checkpoints) and os.fdopen; other paths are untouched.
    """

    def __init__(self, monkeypatch, root: Path, code: int, broken=lambda: True):
        self.root, self.code, self.broken = str(root), code, broken
        self._open, self._fdopen = builtins.open, os.fdopen
        monkeypatch.setattr(builtins, "open", self.open)
        monkeypatch.setattr(os, "fdopen", self.fdopen)

    def open(self, file, mode="r", *args, **kwargs):
        handle = self._open(file, mode, *args, **kwargs)
        return self._wrap(handle, file, mode)

    def fdopen(self, fd, mode="r", *args, **kwargs):
        handle = self._fdopen(fd, mode, *args, **kwargs)
        return self._wrap(handle, os.readlink(f"/proc/self/fd/{fd}"), mode)

    def _wrap(self, handle, path, mode: str):
        writing = any(flag in mode for flag in "wax+")
        below_root = not isinstance(path, int) and os.path.commonpath([self.root, os.path.abspath(path)]) == self.root
        if not writing or not below_root or not self.broken():
            return handle
        if self.code == errno.EROFS:
            handle.close()
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return _FillingFile(handle)


class _FillingFile:
    """A file on a disk that is full: half of the first write lands, then ENOSPC."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        self._handle.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._handle.name)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


@pytest.fixture(autouse=True, scope="module")
def keep_torch_threads():
    """train.main run in-process sets torch's thread count (train.threads); give the next module its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tiny_dataset, tmp_path_factory) -> Path:
    """model.pth, best_model.pth and best_chamfer_model.pth of an untrained tiny model on the tiny dataset.

    Written in-process by train.py's own checkpoint code: the same format as a trained run, in a second.
    """
    directory = tmp_path_factory.mktemp("checkpoints")
    cfg = config_module.build_config("dfaust", TINY)
    cfg.data.preprocessed_dir, cfg.data.split_file = tiny_dataset["preprocessed"], tiny_dataset["split_file"]
    torch.manual_seed(0)
    model = NeuralParts(cfg.model)
    payload = train._checkpoint(model, torch.optim.RAdam(model.parameters()), 2,
                                {"val_iou": 0.1, "val_chamfer_l1": 0.2}, cfg)
    for name in CHECKPOINTS:
        save_checkpoint(str(directory / name), payload)
    return directory


# --- SIGKILL during training ------------------------------------------------------------------------------

def _kill_when(command: list[str], ready, delay: float = 0.0, timeout: float = 120.0) -> None:
    """Start `command`, SIGKILL it `delay` s after ready() becomes true; it must still be running then."""
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _logged_steps(run_dir: Path) -> int:
    try:
        return max(0, (run_dir / "log.csv").read_text().count("\n") - 1)
    except FileNotFoundError:
        return 0


def _assert_checkpoints_intact(run_dir: Path) -> int:
    """Every visible *.pth loads with finite weights; temporary files are hidden. Returns model.pth's step."""
    names = {path.name for path in run_dir.iterdir()}
    visible = {name for name in names if name.endswith(".pth") and not name.startswith(".")}
    assert visible <= CHECKPOINTS, visible
    temporaries = {name for name in names if ".pth" in name} - CHECKPOINTS
    assert all(name.partition(".tmp-")[0] in CHECKPOINTS for name in temporaries)
    for name in visible:
        assert finite_weights(load_checkpoint(str(run_dir / name)))
    step = load_checkpoint(str(run_dir / "model.pth"))["step"]
    assert step % 2 == 0 and 2 <= step < STEPS
    return step


def test_training_killed_between_and_during_checkpoint_writes_resumes_from_the_latest(tiny_dataset, tmp_path):
    rng = random.Random(8)
    command = [sys.executable, "train.py", *train_args(tiny_dataset, tmp_path, STEPS)]
    resume = command + ["--resume", str(tmp_path / "model.pth")]
    computed = {}  # step -> log row of a killed run, for steps after its last checkpoint: the resumed run redoes them

    def after_kill() -> int:
        step = _assert_checkpoints_intact(tmp_path)
        computed.update({int(row["step"]): row for row in log_rows(tmp_path)
                         if int(row["step"]) > step and int(row["step"]) not in computed})
        return step

    # 1. at a random moment after a random number of logged steps (at even steps: inside the checkpoint write)
    target = rng.randint(3, 5)
    _kill_when(command, lambda: _logged_steps(tmp_path) >= target, rng.uniform(0.0, 0.3))
    step = after_kill()
    # 2. while a checkpoint is being written: a new temporary file has appeared
    before = set(tmp_path.glob("*.pth.tmp-*"))
    _kill_when(resume, lambda: bool(set(tmp_path.glob("*.pth.tmp-*")) - before))
    step = after_kill()
    assert step + 2 in computed  # killed inside the write of step + 2
    # 3. at a random moment of the resumed run, once it has rewritten the log (a new file) and logged a few steps
    old_log, target = (tmp_path / "log.csv").stat().st_ino, step + rng.randint(1, 3)
    _kill_when(resume, lambda: (tmp_path / "log.csv").stat().st_ino != old_log and _logged_steps(tmp_path) >= target,
               rng.uniform(0.0, 0.3))
    after_kill()
    # finish: the run continues from model.pth, redoing exactly what the killed runs had computed past it
    run_script(*resume[1:])
    assert load_checkpoint(str(tmp_path / "model.pth"))["step"] == STEPS
    rows = {int(row["step"]): row for row in log_rows(tmp_path)}
    assert sorted(rows) == list(range(1, STEPS + 1))
    for step, killed_row in computed.items():
        for term in ("loss", "reconstruction", "occupancy", "normal", "coverage", "overlap"):
            a, b = float(rows[step][term]), float(killed_row[term])
            assert abs(a - b) <= 1e-6 * max(1.0, abs(b)), (step, term, a, b)


CHILD_WRITER = """
import os, sys, time
import torch
from checkpoint import save_checkpoint

class Stalling:  # writes the first MiB, then says so and hangs: the parent kills it mid-write
    def __init__(self, handle):
        self.handle, self.written = handle, 0
    def write(self, data):
        self.written += self.handle.write(data)
        if self.written > 1 << 20:
            self.handle.flush()
            print("writing", flush=True)
            time.sleep(600)
        return len(data)
    def __getattr__(self, name):
        return getattr(self.handle, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.handle.close()

import checkpoint
checkpoint.open = lambda *args, **kwargs: Stalling(open(*args, **kwargs))  # the checkpoint's own open
payload = {{"format_version": {version}, "model": {{"w": torch.ones(4_000_000)}}, "optimizer": {{}}, "step": 4,
           "best": {{}}, "rng": {{}}, "config": {{}}}}
save_checkpoint(sys.argv[1], payload)
"""


def test_checkpoint_write_killed_midway_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "model.pth"
    previous = {"format_version": CHECKPOINT_VERSION, "model": {"w": torch.arange(10.0)}, "optimizer": {},
                "step": 2, "best": {}, "rng": {}, "config": {}}
    save_checkpoint(str(path), previous)
    child = subprocess.Popen([sys.executable, "-c", CHILD_WRITER.format(repo=REPO, version=CHECKPOINT_VERSION),
                              str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "writing\n"
    child.kill()
    child.wait()
    loaded = load_checkpoint(str(path))
    assert loaded["step"] == 2 and torch.equal(loaded["model"]["w"], previous["model"]["w"])
    (temp,) = tmp_path.glob("model.pth.tmp-*")  # the half-written file keeps a temporary name ...
    assert temp.stat().st_size > 1 << 20
    with pytest.raises(UserError, match="truncated or corrupt"):  # ... and is never taken for a checkpoint
        load_checkpoint(str(temp))


def test_failure_between_the_temporary_write_and_the_rename_keeps_the_previous_checkpoint(run_dir, tmp_path,
                                                                                          monkeypatch):
    path = tmp_path / "model.pth"
    shutil.copy(run_dir / "model.pth", path)
    before, payload = path.read_bytes(), load_checkpoint(str(path))

    def failing_replace(source, destination):
        raise OSError(errno.EIO, os.strerror(errno.EIO), destination)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(UserError, match=f"cannot write {path}: Input/output error"):
        save_checkpoint(str(path), {**payload, "step": 99})
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


# --- entry points refuse bad input with one line ----------------------------------------------------------

def test_entry_points_refuse_missing_or_damaged_inputs_with_one_line(tiny_dataset, run_dir, tmp_path, capsys):
    good = run_dir / "model.pth"
    truncated, flipped = tmp_path / "truncated.pth", tmp_path / "flipped.pth"
    data = bytearray(good.read_bytes())
    truncated.write_bytes(data[:len(data) // 2])
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(byte ^ 0xFF for byte in data[middle:middle + 16])  # inside a weight
    assert torch.load(io.BytesIO(bytes(data)), weights_only=True)["step"] == 2  # which torch.load alone accepts
    flipped.write_bytes(bytes(data))
    empty = tmp_path / "empty"
    empty.mkdir()
    nowhere = tmp_path / "nowhere"
    split = ["--split-file", tiny_dataset["split_file"]]
    cases = {  # the user's exact view: the scripts in subprocesses (4 at a time: each spends seconds on imports)
        "train, no preprocessed dir": (["train.py", "--data-dir", str(nowhere), *split, *set_flags(2)],
                                       f"preprocessed directory {nowhere} not found"),
        "train, empty preprocessed dir": (["train.py", "--data-dir", str(empty), *split, *set_flags(2)],
                                          f"{empty} holds none of the"),
        "test, no preprocessed dir": (["test.py", str(good), "--data-dir", str(nowhere), *split],
                                      f"preprocessed directory {nowhere} not found"),
        "test, empty preprocessed dir": (["test.py", str(good), "--data-dir", str(empty), *split],
                                         f"{empty} holds none of the"),
        "test, no checkpoint": (["test.py", str(tmp_path / "none.pth"), *data_args(tiny_dataset)],
                                f"checkpoint {tmp_path / 'none.pth'} does not exist"),
        "test, truncated checkpoint": (["test.py", str(truncated), *data_args(tiny_dataset)],
                                       f"checkpoint {truncated} is truncated or corrupt"),
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(cases, pool.map(lambda case: run_script(*case[0], check=False), cases.values())))
    for name, (_, fragment) in cases.items():
        assert_one_line_error(results[name].returncode, results[name].stderr, fragment, only_line=True)
    # a flipped byte inside a weight (the zip's CRC-32 catches it), for resuming and export too
    for main, argv in ((train.main, ["--resume", str(flipped)]), (result_visualization.main, [str(flipped)])):
        assert_one_line_error(*run_entry(main, argv, capsys), f"checkpoint {flipped} is truncated or corrupt "
                              "(checksum mismatch in archive/data/", "use an earlier checkpoint", only_line=True)
    for name in CHECKPOINTS:  # the run's other checkpoints are still there and load
        assert finite_weights(load_checkpoint(str(run_dir / name)))


class _RunsCode:
    """Unpickling this object creates the file `marker` (stands for any code an attacker chooses)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickled_code_is_refused_and_would_have_run(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    malicious = tmp_path / "malicious.pth"
    torch.save({"format_version": CHECKPOINT_VERSION, "model": _RunsCode(str(marker))}, malicious)
    for main, argv in ((train.main, ["--resume", str(malicious)]), (evaluation_script.main, [str(malicious)]),
                       (result_visualization.main, [str(malicious)])):
        assert_one_line_error(*run_entry(main, argv, capsys), "was refused for safety", only_line=True)
    assert not marker.exists()
    # What an unsafe load would have done: unpickle the archive's data.pkl as plain pickle does.
    with zipfile.ZipFile(malicious) as archive:
        (data,) = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        pickle.loads(archive.read(data))
    assert marker.exists()


def test_every_load_of_a_pickle_is_safe():
    """Project code calls torch.load only with weights_only=True, np.load never with allow_pickle, never pickle.load."""
    offenders = []
    for path in Path(REPO).rglob("*.py"):
        relative = path.relative_to(REPO)
        if relative.parts[0] in (".venv", ".git", "tests"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
            call = f"{owner}.{node.func.attr}"
            if (call == "torch.load" and keywords.get("weights_only") is not True
                    or call == "np.load" and keywords.get("allow_pickle") is True
                    or call in ("pickle.load", "pickle.loads")):
                offenders.append(f"{relative}:{node.lineno} {call}")
    assert not offenders


def test_checkpoints_of_other_versions_fail_in_one_line_and_other_primitive_counts_work(run_dir, tmp_path, capsys):
    good = run_dir / "model.pth"
    payload = load_checkpoint(str(good))
    model, cfg = load_model(str(good), torch.device("cpu"))
    assert cfg.model.n_primitives == model.embedding.shape[0] == 3 != config_module.Config().model.n_primitives
    bad_config = {group: dict(fields) for group, fields in payload["config"].items()}
    bad_config["model"]["removed_option"] = 1
    variants = {
        "version": ({**payload, "format_version": CHECKPOINT_VERSION + 1}, "has format version 2, this code reads"),
        "missing weight": ({**payload, "model": {k: v for k, v in payload["model"].items() if k != "embedding"}},
                           'does not match this code\'s NeuralParts (Missing key(s) in state_dict: "embedding"'),
        "other shape": ({**payload, "model": {**payload["model"], "embedding": torch.zeros(3, 7)}},
                        "size mismatch for embedding"),
        "config": ({**payload, "config": bad_config}, "unknown config key 'model.removed_option'"),
        "keys": ({k: v for k, v in payload.items() if k != "config"}, "lacks config"),
    }
    for name, (variant, fragment) in variants.items():
        path = tmp_path / f"{name}.pth"
        save_checkpoint(str(path), variant)
        with pytest.raises(UserError) as caught:
            load_model(str(path), torch.device("cpu"))
        assert fragment in str(caught.value) and str(path) in str(caught.value) and "\n" not in str(caught.value)
    # resuming goes through the same checks, for the optimizer's state too
    assert_one_line_error(*run_entry(train.main, ["--resume", str(tmp_path / "other shape.pth")], capsys),
                          "size mismatch for embedding", only_line=True)
    weights_only = tmp_path / "weights_only.pth"  # a best_*.pth: loads for evaluation, cannot be resumed
    save_checkpoint(str(weights_only), {k: v for k, v in payload.items() if k not in ("optimizer", "rng")})
    assert load_model(str(weights_only), torch.device("cpu"))[1].model.n_primitives == 3
    assert_one_line_error(*run_entry(train.main, ["--resume", str(weights_only)], capsys),
                          f"checkpoint {weights_only} holds weights only and cannot be resumed; resume from the "
                          "run's model.pth", only_line=True)
    no_groups = tmp_path / "no_groups.pth"
    save_checkpoint(str(no_groups), {**payload, "optimizer": {"state": {}, "param_groups": []}})
    assert_one_line_error(*run_entry(train.main, ["--resume", str(no_groups)], capsys),
                          f"checkpoint {no_groups} does not match this code's RAdam", only_line=True)


def test_demo_refuses_a_checkpoint_of_an_earlier_demo_preset(tmp_path):
    """`make demo` after the preset changed must not resume or test the old model (utils/demo.py)."""
    demo = _load_script("demo_entry", "utils/demo.py")
    cfg = config_module.build_config("demo")
    model = NeuralParts(cfg.model)
    path = tmp_path / "model.pth"
    for step, finished in ((cfg.train.steps - 1, False), (cfg.train.steps, True)):
        save_checkpoint(str(path), train._checkpoint(model, torch.optim.RAdam(model.parameters()), step, {}, cfg))
        assert demo._trained_steps(path) is finished
    older = config_module.build_config("demo", ["train.steps=1400"])
    save_checkpoint(str(path), train._checkpoint(model, torch.optim.RAdam(model.parameters()), 1400, {}, older))
    with pytest.raises(UserError) as caught:
        demo._trained_steps(path)
    assert str(caught.value) == (f"{path} was trained with another demo configuration (an earlier version of the "
                                 "preset?); run `make clean-demo` (or utils/demo.py --fresh), then `make demo`")


def test_bad_preprocessed_files_and_split_files_stop_training_in_one_line(tiny_dataset, tmp_path, capsys):
    not_hdf5, no_faces = tmp_path / "not_hdf5", tmp_path / "no_faces"
    for directory in (not_hdf5, no_faces):
        shutil.copytree(tiny_dataset["preprocessed"], directory)
    trained_on = sorted(row.sequence_id for row in read_split_file(tiny_dataset["split_file"]) if row.split == "train")
    damaged = not_hdf5 / f"{trained_on[0]}.h5"
    damaged.write_bytes(b"not an HDF5 file")
    incomplete = no_faces / f"{trained_on[0]}.h5"
    with h5py.File(incomplete, "a") as file:
        del file["faces"]
    unknown = write_split(tmp_path / "unknown.csv", [("50999_hips", 30, "train")])
    malformed = tmp_path / "malformed.csv"
    malformed.write_text("id,model_id,split\n50002_punching,00021\n")
    cases = [(["--data-dir", str(not_hdf5)], f"{damaged} is not a readable HDF5 file"),
             (["--data-dir", str(no_faces)], f"{incomplete} is incomplete"),
             (["--split-file", str(unknown)], "holds none of the 1 frames"),
             (["--split-file", str(malformed)], f"{malformed}:2: expected 3 fields")]
    for extra, fragment in cases:
        argv = train_args(tiny_dataset, tmp_path / "run", 2) + extra  # the later --data-dir / --split-file wins
        assert_one_line_error(*run_entry(train.main, argv, capsys), fragment, only_line=True)


@pytest.mark.parametrize("override, fragment", [
    ("data.network_image_size=8", "data.network_image_size=8 is too small for the ResNet-18 encoder"),
    ("train.nope=1", "unknown config key 'train.nope'"),
    ("train.steps=two", "config key 'train.steps': cannot read 'two' as int"),
])
def test_bad_settings_stop_training_before_anything_is_written(tiny_dataset, tmp_path, capsys, override, fragment):
    argv = train_args(tiny_dataset, tmp_path / "run", 2, override)
    assert_one_line_error(*run_entry(train.main, argv, capsys), fragment, only_line=True)
    assert not (tmp_path / "run").exists()


# --- unwritable and full output directories ---------------------------------------------------------------

def test_output_path_below_a_file_is_one_line_for_every_entry_point(tiny_dataset, run_dir, tmp_path, capsys):
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    good = str(run_dir / "model.pth")
    for main, argv in ((train.main, train_args(tiny_dataset, blocked / "run", 2)),
                       (evaluation_script.main, [good, *data_args(tiny_dataset), "--output-dir", str(blocked / "t")]),
                       (result_visualization.main, [good, *data_args(tiny_dataset), "--output-dir",
                                                    str(blocked / "v")])):
        assert_one_line_error(*run_entry(main, argv, capsys), str(blocked), "Not a directory", "--output-dir")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_training_on_a_disk_that_fills_keeps_the_last_checkpoint(tiny_dataset, tmp_path, monkeypatch, capsys, code):
    BrokenDisk(monkeypatch, tmp_path, code, broken=lambda: (tmp_path / "model.pth").exists())
    argv = train_args(tiny_dataset, tmp_path, 6, "train.log_every=100")
    assert_one_line_error(*run_entry(train.main, argv, capsys), f"cannot write {tmp_path / 'model.pth'}",
                          os.strerror(code), "--output-dir")
    monkeypatch.undo()
    assert load_checkpoint(str(tmp_path / "model.pth"))["step"] == 2
    assert not list(tmp_path.glob("*.tmp-*"))


def test_training_on_a_full_disk_keeps_the_files_already_there(tiny_dataset, tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine\n")
    BrokenDisk(monkeypatch, tmp_path, errno.ENOSPC)
    assert_one_line_error(*run_entry(train.main, train_args(tiny_dataset, tmp_path, 2), capsys),
                          f"cannot write {tmp_path / 'run.json'}: No space left on device", only_line=True)
    monkeypatch.undo()
    assert files_of(tmp_path) == {"notes.txt": b"mine\n"}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_evaluation_on_a_broken_disk_keeps_earlier_results(tiny_dataset, run_dir, tmp_path, monkeypatch,
                                                           capsys, code):
    (tmp_path / "frames.csv").write_text("earlier frames\n")
    (tmp_path / "summary.json").write_text("{}\n")
    BrokenDisk(monkeypatch, tmp_path, code)
    argv = [str(run_dir / "model.pth"), *data_args(tiny_dataset), "--output-dir", str(tmp_path)]
    assert_one_line_error(*run_entry(evaluation_script.main, argv, capsys), f"cannot write {tmp_path / 'frames.csv'}",
                          os.strerror(code), "--output-dir")
    monkeypatch.undo()
    assert files_of(tmp_path) == {"frames.csv": b"earlier frames\n", "summary.json": b"{}\n"}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_export_on_a_broken_disk_keeps_earlier_files(tiny_dataset, run_dir, tmp_path, monkeypatch, capsys,
                                                     code):
    frame = FrameDataset(tiny_dataset["preprocessed"], tiny_dataset["split_file"], ("test",),
                         config_module.build_config("dfaust", TINY).data).frames[0]
    frame_dir = tmp_path / f"{frame[0]}_{frame[1]:05d}"
    frame_dir.mkdir()
    (frame_dir / "primitive_00.obj").write_text("earlier mesh\n")
    BrokenDisk(monkeypatch, tmp_path, code)
    argv = [str(run_dir / "model.pth"), *data_args(tiny_dataset), "--frame", f"{frame[0]}:{frame[1]}",
            "--output-dir", str(tmp_path)]
    assert_one_line_error(*run_entry(result_visualization.main, argv, capsys),
                          f"cannot write {frame_dir / 'primitive_00.obj'}", os.strerror(code), "--output-dir")
    monkeypatch.undo()
    assert files_of(frame_dir) == {"primitive_00.obj": b"earlier mesh\n"}


# --- numerical faults --------------------------------------------------------------------------------------

def poisoned_loss(monkeypatch, poison: dict[int, str]):
    """Make train.total_loss return a non-finite loss ("loss"), a finite loss with NaN gradients ("gradient") or
    one with zero gradients ("zero": the loss times 0) at the given 1-based steps."""
    calls = {"n": 0}
    total_loss = train.total_loss

    def poisoned(prediction, targets, cfg):
        loss, terms = total_loss(prediction, targets, cfg)
        calls["n"] += 1
        kind = poison.get(calls["n"])
        if kind == "loss":
            loss = loss * math.inf
        elif kind == "gradient":  # sqrt at 0: the value stays, the derivative is inf * 0 = NaN
            loss = loss + torch.sqrt(prediction.phi_volume.abs().sum() * 0.0)
        elif kind == "zero":
            loss = loss * 0.0
        return loss, terms

    monkeypatch.setattr(train, "total_loss", poisoned)


def test_non_finite_steps_are_skipped_with_a_warning(tiny_dataset, tmp_path, monkeypatch):
    poisoned_loss(monkeypatch, {3: "loss", 5: "gradient"})
    with pytest.warns(UserWarning) as caught:
        assert train.main(train_args(tiny_dataset, tmp_path, 6)) == 0
    skipped = [str(w.message) for w in caught if "non-finite" in str(w.message)]
    assert skipped == ["step 3: non-finite loss or gradient, step skipped (1 in a row)",
                       "step 5: non-finite loss or gradient, step skipped (1 in a row)"]
    rows = {int(row["step"]): row for row in log_rows(tmp_path)}
    assert rows[3]["loss"] == rows[5]["loss"] == "" and all(rows[s]["loss"] for s in (1, 2, 4, 6))
    payload = load_checkpoint(str(tmp_path / "model.pth"))
    assert payload["step"] == 6 and finite_weights(payload)


def test_non_finite_steps_in_a_row_stop_training_with_the_last_good_checkpoint(tiny_dataset, tmp_path, monkeypatch,
                                                                               capsys):
    poisoned_loss(monkeypatch, {step: "loss" for step in range(3, 20)})
    argv = train_args(tiny_dataset, tmp_path, 10, "train.max_nonfinite_steps=3")
    with pytest.warns(UserWarning, match="non-finite"):
        status, stderr = run_entry(train.main, argv, capsys)
    assert_one_line_error(status, stderr, "3 non-finite steps in a row at step 5", "train.lr", str(tmp_path))
    payload = load_checkpoint(str(tmp_path / "model.pth"))  # step 4 skipped its update: the step-2 weights
    assert payload["step"] == 4 and finite_weights(payload)


def test_a_non_finite_model_is_never_checkpointed(tiny_dataset, tmp_path, monkeypatch, capsys):
    radam = torch.optim.RAdam

    def poisoning_radam(*args, **kwargs):  # the second update leaves a NaN weight (as an overflowing update would)
        optimizer = radam(*args, **kwargs)
        step, calls = optimizer.step, []

        def poisoned_step(*step_args, **step_kwargs):
            result = step(*step_args, **step_kwargs)
            calls.append(1)
            if len(calls) == 2:
                optimizer.param_groups[0]["params"][0].data.view(-1)[0] = math.nan
            return result

        optimizer.step = poisoned_step
        return optimizer

    monkeypatch.setitem(train.OPTIMIZERS, "radam", poisoning_radam)
    status, stderr = run_entry(train.main, train_args(tiny_dataset, tmp_path, 6), capsys)
    assert_one_line_error(status, stderr, f"model weights became non-finite; {tmp_path / 'model.pth'} was not written")
    payload = load_checkpoint(str(tmp_path / "model.pth"))
    assert payload["step"] == 2 and finite_weights(payload)
    assert not list(tmp_path.glob("*.tmp-*")) and not (tmp_path / "best_model.pth").exists()


def test_coupling_scales_stay_within_s_bound_for_extreme_inputs(monkeypatch):
    """s = Hardtanh(net output) keeps every coupling finite for inputs far outside the training range.

    (The normaliser sigma = elu(.) + 1 after the couplings, as the authors', reaches 0 for such C, so only the
    couplings' outputs are checked here.)
    """
    cfg = config_module.build_config("dfaust", TINY)
    torch.manual_seed(0)
    model = NeuralParts(cfg.model).eval()
    scales, outputs = [], []
    hardtanh = torch.nn.functional.hardtanh

    def recording_hardtanh(x, min_val, max_val, *args, **kwargs):
        y = hardtanh(x, min_val, max_val, *args, **kwargs)
        scales.append((x.abs().max().item(), y.abs().max().item()))
        return y

    monkeypatch.setattr(torch.nn.functional, "hardtanh", recording_hardtanh)
    for layer in model.inn.layers:
        layer.register_forward_hook(lambda module, args, output: outputs.append(torch.isfinite(output).all().item()))
    C = 1e4 * torch.randn(2, cfg.model.n_primitives, cfg.model.feature_size + cfg.model.embedding_size)
    with torch.no_grad():
        model.phi(1e3 * torch.randn(2, 50, cfg.model.n_primitives, 3), C)  # (B, N, M, 3) sphere -> world
        model.phi_inverse(1e3 * torch.randn(2, 50, 3), C)  # world -> sphere
    assert len(scales) >= 2 * cfg.model.n_coupling_layers and outputs and all(outputs)
    assert max(raw for raw, _ in scales) > 10 * cfg.model.s_bound  # the inputs push s far past the bound ...
    assert all(bounded <= cfg.model.s_bound for _, bounded in scales)  # ... and every scale stays within it


# --- preprocessing inputs not covered in test_preprocess.py ------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*registrations_f.hdf5 not found")
def test_empty_dataset_dir_and_infinite_vertices(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    split = write_split(tmp_path / "split.csv", [("50002_hips", 20, "train")])
    data = config_module.DataConfig(n_stored_points=1000)
    with pytest.raises(UserError, match=f"{empty} holds neither registrations_f.hdf5 nor registrations_m.hdf5"):
        pipeline.run(empty, tmp_path / "out", split, data, workers=0, progress=False)
    mesh = body_mesh()
    vertices = moving_sequence(mesh, 21)
    vertices[5, 0, 20] = np.inf
    write_registrations(tmp_path / "raw" / "registrations_m.hdf5", mesh.faces, {"50002_hips": vertices})
    with pytest.warns(UserWarning, match="50002_hips: frame 20 has NaN or infinite vertices"):
        summary = pipeline.run(tmp_path / "raw", tmp_path / "out", split, data, workers=0, progress=False)
    assert len(summary.failed) == 1 and not list((tmp_path / "out").glob("*.h5"))


def test_stale_checkpoint_temporaries_are_removed_and_checkpoints_get_usual_permissions(tmp_path):
    from checkpoint import remove_stale_temporaries, save_checkpoint
    (tmp_path / "model.pth.tmp-123").write_bytes(b"half a checkpoint")
    (tmp_path / "keep.txt").write_text("not ours")
    remove_stale_temporaries(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    old_mask = os.umask(0o022)
    try:
        save_checkpoint(str(tmp_path / "model.pth"), {"format_version": 1})
    finally:
        os.umask(old_mask)
    assert (tmp_path / "model.pth").stat().st_mode & 0o777 == 0o644
