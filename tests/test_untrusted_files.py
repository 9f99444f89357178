"""Files relupo is handed never run code: pickled checkpoints, remote model code, YAML tags."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from relupo import checkpoint
from relupo.cli import main
from relupo.config import BUNDLED_MODEL, ModelConfig, load_config
from relupo.errors import ConfigError, RelupoError
from relupo.modeling import load_model, load_tokenizer

PACKAGE = Path(__file__).parent.parent / "src" / "relupo"


class WritesMarker:
    """Unpickling this object calls Path.write_text: the code a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def tiny_checkpoint(output_dir: Path) -> tuple[Path, torch.nn.Module, torch.optim.Optimizer, object]:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    path = checkpoint.save_checkpoint(output_dir, model, optimizer, scheduler, checkpoint.TrainerState(global_step=1), keep=1)
    return path, model, optimizer, scheduler


def test_pickled_optimizer_state_rejected(tmp_path):
    path, model, optimizer, scheduler = tiny_checkpoint(tmp_path / "run")
    marker = tmp_path / "marker"
    torch.save({"state": {}, "param_groups": [], "payload": WritesMarker(marker)}, path / "optimizer.pt")

    with pytest.raises(RelupoError) as error:
        checkpoint.load_checkpoint(path, model, optimizer, scheduler)

    assert str(error.value) == (
        f"{path / 'optimizer.pt'}: the file contains Python objects other than tensors and plain values, and loading "
        "them would let the file run code; relupo loads checkpoints with torch.load(weights_only=True), which "
        "rejects them. Delete this checkpoint and resume from an older one, or start a new run."
    )
    assert not marker.exists()


def test_payload_runs_under_full_unpickling(tmp_path):
    """The payload above is real: torch.load without weights_only runs it."""
    marker = tmp_path / "marker"
    torch.save({"payload": WritesMarker(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "code ran"


def remote_code_model(directory: Path, with_custom_tokenizer: bool) -> Path:
    """A local model directory whose config (and optionally tokenizer) names Python files to import."""
    directory.mkdir()
    marker = directory / "MARKER"
    for name in ("tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(Path(BUNDLED_MODEL) / name, directory / name)
    code = f"open({str(marker)!r}, 'w').write('code ran')\n"
    for module in ("configuration_custom.py", "modeling_custom.py", "tokenization_custom.py"):
        (directory / module).write_text(code)
    config = {
        "model_type": "relupo_test_custom",
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.CustomModel"},
    }
    (directory / "config.json").write_text(json.dumps(config))
    if with_custom_tokenizer:
        tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
        tokenizer_config["auto_map"] = {"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]}
        tokenizer_config["tokenizer_class"] = "CustomTokenizer"
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return marker


REMOTE_CODE_MESSAGE = (
    "{path}: this model needs its own Python code to load. Read that code, then set trust_remote_code: true "
    "in the model section (or pass --trust-remote-code true)."
)


def test_remote_code_model_rejected(tmp_path):
    marker = remote_code_model(tmp_path / "model", with_custom_tokenizer=False)
    with pytest.raises(RelupoError) as error:
        load_model(ModelConfig(model_name_or_path=str(tmp_path / "model")))
    assert str(error.value) == REMOTE_CODE_MESSAGE.format(path=tmp_path / "model")
    assert not marker.exists()


def test_remote_code_tokenizer_rejected(tmp_path):
    marker = remote_code_model(tmp_path / "model", with_custom_tokenizer=True)
    with pytest.raises(RelupoError) as error:
        load_tokenizer(ModelConfig(model_name_or_path=str(tmp_path / "model")))
    assert str(error.value) == REMOTE_CODE_MESSAGE.format(path=tmp_path / "model")
    assert not marker.exists()


def test_trust_remote_code_off_by_default():
    assert ModelConfig().trust_remote_code is False
    assert load_config(None, {}).model.trust_remote_code is False


YAML_PAYLOAD = 'gamma: !!python/object/apply:os.system ["touch {marker}"]\n'


def test_yaml_python_tag_rejected(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "run.yaml"
    path.write_text(YAML_PAYLOAD.format(marker=marker))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == (
        f"{path}, line 1: invalid YAML (could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'). Config files are read with yaml.safe_load, which "
        "builds only mappings, lists, strings, numbers and booleans; remove the tag."
    )
    assert not marker.exists()


def test_yaml_python_tag_cli_exit_status(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "run.yaml"
    path.write_text(YAML_PAYLOAD.format(marker=marker))
    assert main(["train", "--config", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"relupo: error: {path}, line 1: invalid YAML (could not determine a constructor")
    assert stderr.count("\n") == 1
    assert not marker.exists()


def package_sources() -> list[tuple[Path, str]]:
    return [(path, path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.rglob("*.py"))]


def test_package_never_evaluates_or_unpickles():
    forbidden = {
        r"(?<![\w.])eval\(": "eval",
        r"(?<![\w.])exec\(": "exec",
        r"pickle\.loads?\(": "pickle.load",
        r"yaml\.(unsafe_)?load\(": "yaml.load",
        r"yaml\.(Unsafe|Full)?Loader\b": "an unsafe YAML loader",
    }
    sources = package_sources()
    assert len(sources) > 10
    for path, text in sources:
        for pattern, name in forbidden.items():
            assert not re.search(pattern, text), f"{path} uses {name}"


def test_every_torch_load_is_weights_only():
    calls = [(path, match) for path, text in package_sources() for match in re.findall(r"torch\.load\([^)]*\)", text)]
    assert calls, "expected the checkpoint loader to call torch.load"
    for path, call in calls:
        assert "weights_only=True" in call, f"{path}: {call}"
