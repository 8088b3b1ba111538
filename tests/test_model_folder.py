"""Model folders: each component loads from its own config.json, strictly, with errors that name what is
wrong (issue 23 "one source of truth"; issue 28 items 4 and 8)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from fusionframes import cli
from fusionframes.config import LayoutPriorConfig
from fusionframes.io.checkpoints import (
    BUILTIN_DIR,
    CONFIG_METADATA_KEY,
    CheckpointError,
    load_model_folder,
    load_strict,
    read_folder_config,
)
from fusionframes.layout_prior.model import LayoutPrior


@pytest.fixture
def folder(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_root_config_holds_no_component_and_each_folder_records_its_config(folder: Path) -> None:
    root = json.loads((folder / "config.json").read_text())
    assert set(root) == {"sampling"}
    for name in ("keyframe_unet", "interpolation_unet", "movq", "text_projection"):
        with safe_open(str(folder / name / "model.safetensors"), "pt") as handle:
            recorded = json.loads(handle.metadata()[CONFIG_METADATA_KEY])
        assert recorded == json.loads((folder / name / "config.json").read_text())


def test_the_component_config_is_what_loads_it(folder: Path) -> None:
    """max_length changes no weight: edited in text_projection/config.json (and the record), it is used."""
    edit_json(folder / "text_projection" / "config.json", max_length=7)
    weights = folder / "text_projection" / "model.safetensors"
    with safe_open(str(weights), "pt") as handle:
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(
        state, str(weights), metadata={CONFIG_METADATA_KEY: (weights.parent / "config.json").read_text()}
    )
    assert read_folder_config(folder).text.max_length == 7
    assert load_model_folder(folder).config.text.max_length == 7


def test_a_config_that_disagrees_with_its_weights_names_component_and_field(folder: Path) -> None:
    edit_json(folder / "keyframe_unet" / "config.json", model_channels=16, init_channels=16)
    with pytest.raises(CheckpointError, match=r"keyframe_unet: config.json field 'init_channels' is 16 but"):
        load_model_folder(folder)


def test_weights_without_a_record_still_fail_strictly_naming_the_component(folder: Path) -> None:
    weights = folder / "movq" / "model.safetensors"
    with safe_open(str(weights), "pt") as handle:
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(state, str(weights))  # as folders written before the record existed
    edit_json(folder / "movq" / "config.json", ch=16)
    with pytest.raises(CheckpointError, match=r"^movq \(movq/config.json vs movq/model.safetensors\).*shape"):
        load_model_folder(folder)


def test_an_older_root_copy_that_disagrees_is_refused(folder: Path) -> None:
    """Folders written before kept every component in the root config.json too: two sources must agree."""
    whole = {
        "sampling": json.loads((folder / "config.json").read_text())["sampling"],
        "keyframe_unet": json.loads((folder / "keyframe_unet" / "config.json").read_text()),
    }
    (folder / "config.json").write_text(json.dumps(whole))
    assert read_folder_config(folder).keyframe_unet.num_frames == 4
    whole["keyframe_unet"]["num_frames"] = 9
    (folder / "config.json").write_text(json.dumps(whole))
    with pytest.raises(CheckpointError, match=r"keyframe_unet: .* disagree on num_frames \(4 vs 9\)"):
        read_folder_config(folder)


def test_a_bad_component_config_names_its_folder(folder: Path) -> None:
    edit_json(folder / "movq" / "config.json", chanels=8)
    with pytest.raises(
        CheckpointError, match=r"movq: .*movq/config.json: MoVQConfig: unknown key\(s\) \['chanels'\]"
    ):
        read_folder_config(folder)


def test_strict_means_strict_no_key_is_filled() -> None:
    """The loader used to fill a missing word-order slope of the layout prior with zeros."""
    prior = LayoutPrior(LayoutPriorConfig(context_dim=16, object_slots=1))
    state = prior.state_dict()
    dropped = next(k for k in state if k.endswith("order"))
    del state[dropped]
    with pytest.raises(CheckpointError, match=rf"1 missing key\(s\): {dropped}"):
        load_strict(prior, state, "layout_prior")


def test_the_builtin_folder_loads_strictly() -> None:
    components = load_model_folder(BUILTIN_DIR)
    assert components.layout_prior is not None
    assert set(json.loads((BUILTIN_DIR / "config.json").read_text())) == {"sampling"}


@pytest.mark.parametrize("missing", [("tokenizer.json", "spiece.model"), ("config.json",)])
def test_a_text_encoder_without_its_files_is_a_load_error(folder: Path, missing: tuple[str, ...]) -> None:
    """Issue 28.4: without tokenizer.json every word became <unk>, silently."""
    for name in missing:
        (folder / "text_encoder" / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match=rf"text_encoder: .*text_encoder/{missing[0]} not found"):
        load_model_folder(folder)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "config.json").unlink(), "model: config.json not found in "),
        (
            lambda f: (f / "model_index.json").write_text('{"name": "a\x01b"}'),
            "model_index.json is not valid JSON",
        ),
        (lambda f: (f / "movq" / "config.json").write_bytes(b"\xff\xfe\x00"), "movq: .* is not a text file"),
        (lambda f: (f / "keyframe_unet" / "config.json").unlink(), "keyframe_unet: config.json not found in"),
        (lambda f: (f / "text_encoder" / "tokenizer.json").unlink(), "tokenizer.json not found"),
    ],
)
def test_cli_errors_name_the_file(folder: Path, damage, message: str, tmp_path: Path, capsys) -> None:
    """Issue 28.8: not ``[Errno 2]`` or ``Invalid control character``, but which file of which model."""
    (folder / "text_encoder" / "spiece.model").unlink(missing_ok=True)
    damage(folder)
    code = cli.main(
        ["generate", "x", "--model", str(folder), "-o", str(tmp_path / "v.mp4"), "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert re.search(message, err), err


def test_convert_config_that_is_not_json(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "c.json"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert cli.main(["convert", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "config: " in (err := capsys.readouterr().err) and "not a text file" in err
    bad.write_text("{oops")
    assert cli.main(["convert", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_meta_build_skips_initialisers_and_restores_them() -> None:
    """Loaders build on meta with torch.nn.init's initialisers skipped (every weight comes from the file),
    and put them back afterwards, also when the build fails."""
    import subprocess
    import sys

    import torch
    from torch import nn

    from fusionframes.components import INITIALISERS, initialisers_skipped

    before = {name: getattr(nn.init, name) for name in INITIALISERS}
    with pytest.raises(RuntimeError, match="inside"), initialisers_skipped():
        assert torch.equal(nn.init.normal_(torch.zeros(3)), torch.zeros(3))  # left as it was
        raise RuntimeError("inside")
    assert {name: getattr(nn.init, name) for name in INITIALISERS} == before
    # In a fresh process, loading the built-in model no longer pulls in torch's compiler stack (which
    # the meta-device initialisers imported through Python decompositions).
    code = (
        "import sys; from fusionframes.io.checkpoints import load_model; load_model(None); "
        "print('torch._dynamo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
