"""train.py before any work: settings checked, run directories never written over, recorded runs replayed,
ImageNet weights fetched by torch.hub's loader (simulated here; nothing is downloaded)."""
import email.message
import hashlib
import io
import json
import resource
import urllib.error

import pytest
import torch
from torchvision.models import resnet18

import config
import train
from common.errors import UserError
from models.feature_extractor import ImageEncoder
from tests.conftest import run_script


@pytest.mark.parametrize("override, message", [
    ("train.optimizer=sgd", "'sgd' is not one of radam, adam"),
    ("model.pretrained=yes", "'yes' is not one of auto, true, false"),
    ("train.device=tpu", "'tpu' is not one of auto, cpu, cuda"),
    ("train.lr=0", "'train.lr'=0.0 must be > 0"),
    ("model.n_primitives=0", "'model.n_primitives'=0 must be >= 1"),
    ("train.steps=7", "must be a multiple of train.aggregate=2"),
    ("data.near_surface_share=1", "must be in [0, 1)"),
    ("data.volume_box_max=0.5,-1,0.5", "must exceed data.volume_box_min"),
    ("loss.w_overlap=-0.1", "'loss.w_overlap'=-0.1 must be >= 0"),
])
def test_bad_settings_are_refused_when_the_config_is_built(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        config.build_config("dfaust", [override])


def test_every_preset_is_valid():
    for preset in config.PRESETS:
        config.build_config(preset)


def test_a_bad_value_fails_in_seconds_before_the_run_directory_exists(tmp_path):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_script("train.py", "--output-dir", str(tmp_path / "run"), "--set", "model.n_primitives=0",
                        check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds, not wall time, so a busy machine does not fail it (about 4 s, nearly all importing torch)
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 10
    assert result.returncode == 2
    assert result.stderr.strip() == "error: config key 'model.n_primitives'=0 must be >= 1"
    assert not (tmp_path / "run").exists()


def test_a_directory_holding_a_run_is_refused_and_left_untouched(tmp_path):
    files = {"run.json": b'{"config": {}}', "model.pth": b"weights", "log.csv": b"step\n1\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = run_script("train.py", "--output-dir", str(tmp_path), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "already holds a run" in result.stderr and "--resume" in result.stderr and "--overwrite" in result.stderr
    assert {name: (tmp_path / name).read_bytes() for name in files} == files


def test_overwrite_removes_only_the_earlier_runs_files(tmp_path):
    (tmp_path / "model.pth").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    train._claim_run_dir(str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_config_replays_a_recorded_run_then_applies_set(tmp_path):
    recorded = config.build_config("demo", ["model.n_primitives=3"])
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps({"config": config.to_dict(recorded), "git_commit": "x", "command": []}))
    args = train.parse_arguments(["--config", str(run_json), "--set", "train.steps=10"])
    replayed = train._resolve_config(args, None)
    recorded.train.steps = 10
    assert replayed == recorded
    with pytest.raises(UserError, match="drop --preset"):
        train._resolve_config(train.parse_arguments(["--config", str(run_json), "--preset", "demo"]), None)
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(UserError, match="not a run.json"):
        train._resolve_config(train.parse_arguments(["--config", str(tmp_path / "broken.json")]), None)


@pytest.mark.parametrize("script", ["test.py", "utils/result_visualization.py"])
def test_scripts_reading_a_checkpoint_refuse_an_override_it_fixes(script, tmp_path):
    result = run_script(script, str(tmp_path / "model.pth"), "--set", "model.n_primitives=3", check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"{script.split('/')[-1]} cannot honour --set model.n_primitives" in result.stderr


def test_honoured_overrides_accept_a_group_or_a_field():
    assert config.honoured_overrides(["eval.batch_size=8", "train.threads=1"], ("eval", "train.threads"),
                                     "test.py") == {"eval.batch_size": "8", "train.threads": "1"}


def state_bytes() -> tuple[dict, bytes]:
    torch.manual_seed(3)
    state = resnet18(weights=None).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


class FakeResponse(io.BytesIO):
    """What urlopen returns, enough for torch.hub.download_url_to_file."""

    def info(self):
        return email.message.Message()  # no Content-Length header


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty torch hub cache; the network refuses unless a test serves bytes."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    served = {}

    def urlopen(request, *args, **kwargs):
        if "data" not in served:
            raise urllib.error.URLError("Name or service not known")
        return FakeResponse(served["data"])

    monkeypatch.setattr(torch.hub, "urlopen", urlopen)
    return served


def test_weights_are_downloaded_hash_checked_and_loaded(hub, tmp_path):
    state, data = state_bytes()
    hub["data"] = data
    url = f"https://example.invalid/resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    encoder = ImageEncoder(config.ModelConfig())
    assert train.load_imagenet_weights(encoder, "true", url).startswith("ImageNet")
    assert torch.equal(encoder.network.conv1.weight, state["conv1.weight"])
    assert torch.equal(encoder.network.layer1[0].bn1.running_var, state["layer1.0.bn1.running_var"])
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    assert cached.read_bytes() == data
    del hub["data"]  # offline now: the cache serves it
    assert train.load_imagenet_weights(ImageEncoder(config.ModelConfig()), "true", url).startswith("ImageNet")


def test_a_download_with_the_wrong_hash_is_not_kept(hub, tmp_path):
    _, data = state_bytes()
    hub["data"] = data
    with pytest.warns(UserWarning, match="random initialisation"):
        status = train.load_imagenet_weights(ImageEncoder(config.ModelConfig()), "auto",
                                             "https://example.invalid/resnet18-00000000.pth")
    assert status.startswith("not found")
    assert not any((tmp_path / "hub" / "checkpoints").iterdir())


def test_without_network_auto_warns_true_refuses_false_never_looks(hub):
    encoder = ImageEncoder(config.ModelConfig())
    before = encoder.network.conv1.weight.clone()
    with pytest.warns(UserWarning) as record:
        train.load_imagenet_weights(encoder, "auto")
    assert len(record) == 1 and train.RESNET18_IMAGENET_URL in str(record[0].message)
    assert torch.equal(encoder.network.conv1.weight, before)
    with pytest.raises(UserError, match="model.pretrained=true"):
        train.load_imagenet_weights(encoder, "true")
    assert train.load_imagenet_weights(encoder, "false").startswith("not used")


def test_building_the_model_never_touches_the_network(hub, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("models/ fetched"))
    ImageEncoder(config.ModelConfig(pretrained="true"))


def test_the_setup_summary_says_what_the_run_will_do(tmp_path):
    cfg = config.build_config("demo")
    summary = train._setup_summary(cfg, torch.device("cpu"), train.Distributed(), range(368), range(32),
                                   str(tmp_path), "not used (model.pretrained=false)", 0)
    lines = dict(line.split(None, 1) for line in summary.splitlines())
    assert lines["device"].startswith(f"cpu ({torch.get_num_threads()} CPU threads")
    assert lines["frames"] == "train 368 (train), validation 32 (val), scored on 24"
    assert lines["model"].startswith("5 primitives") and "bf16 INN" in lines["model"]
    assert lines["encoder"] == "not used (model.pretrained=false)"
    assert lines["schedule"].startswith("2,000 batches of 4 (radam, lr 0.0001, cosine decay), from scratch")
    assert summary.splitlines()[-1] == f"run dir     {tmp_path}"
