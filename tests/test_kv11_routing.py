"""Which pipeline a model gets: ``TextToVideoPipeline.from_pretrained`` / ``load_model`` with 1.1 models,
as diffusers' ``DiffusionPipeline.from_pretrained`` picks the class from the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline_kv11 import make_release_folder

import fusionframes
from fusionframes import KandinskyVideo11Pipeline, TextToVideoPipeline
from fusionframes.kandinsky_video import get_T2V_pipeline
from fusionframes.pipelines.kandinsky11 import config_11_for, validate_settings_11
from fusionframes.pipelines.text_to_video import validate_settings


@pytest.fixture(scope="module")
def release_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release_folder(tmp_path_factory.mktemp("route11") / "kv11")


def refuse_loading(monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr("fusionframes.io.checkpoints.load_model", refuse)
    monkeypatch.setattr("fusionframes.io.official_kv11.load_release", refuse)


def test_a_converted_11_folder_gives_the_11_pipeline(tiny_kv11_dir: Path) -> None:
    pipe = TextToVideoPipeline.from_pretrained(tiny_kv11_dir, dtype="float32")
    assert type(pipe) is KandinskyVideo11Pipeline and pipe.video_movq is not None
    with pytest.raises(ValueError, match="motion: unknown 'fast'"):  # the 1.1 call shape, checked first
        pipe("a cat", image=Image.new("RGB", (64, 64)), motion="fast")
    components = fusionframes.load_model(tiny_kv11_dir)
    assert components.video_movq is not None and config_11_for(tiny_kv11_dir) == components.config


def test_a_folder_of_released_files_loads_everywhere(release_folder: Path) -> None:
    components = fusionframes.load_model(release_folder)
    assert components.video_movq is not None and Path(components.text_encoder).name == "text_encoder"
    pipe = TextToVideoPipeline.from_pretrained(release_folder, dtype="float32")
    assert type(pipe) is KandinskyVideo11Pipeline
    config = config_11_for(release_folder)  # read without weights: the T5 width is only in the files
    assert config is not None and config.keyframe_unet == pipe.config.keyframe_unet


def test_a_10_model_is_refused_by_the_11_pipeline_naming_the_class(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="not a Kandinsky Video 1.1 model; load it with TextToVideoPipeline"):
        KandinskyVideo11Pipeline.from_pretrained(tiny_model_dir)
    assert type(TextToVideoPipeline.from_pretrained(tiny_model_dir, dtype="float32")) is TextToVideoPipeline
    assert config_11_for(tiny_model_dir) is None and config_11_for("/nonexistent") is None


def test_10_settings_on_a_11_pipeline_say_what_to_use(tiny_kv11_dir: Path) -> None:
    pipe = TextToVideoPipeline.from_pretrained(tiny_kv11_dir, dtype="float32")
    generator = torch.Generator().manual_seed(0)
    settings_10 = validate_settings(pipe.config, "a cat", seed=0)
    with pytest.raises(TypeError, match="takes GenerationSettings11 from validate_settings_11"):
        pipe.generate(settings_10, generator)
    image = Image.new("RGB", (64, 64))
    settings, _ = validate_settings_11(pipe.config, "a cat", image=image, seed=0)
    with pytest.raises(ValueError, match="image-to-video needs the image; call generate_11"):
        pipe.generate(settings, generator)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"decoder_dtype": "half"}, "decoder_dtype: unknown 'half'"),
        ({"split_branches": 1}, "split_branches: must be True or False"),
        ({"offload": "model"}, "offload: 'model' keeps weights in CPU memory"),
        ({"text_quantization": "int4"}, "text_quantization: unknown 'int4'"),
    ],
)
def test_options_are_checked_before_loading(monkeypatch, options: dict, message: str) -> None:
    refuse_loading(monkeypatch)
    for load in (TextToVideoPipeline.from_pretrained, KandinskyVideo11Pipeline.from_pretrained):
        with pytest.raises(ValueError, match=message):
            load("kandinsky-video-1.1", device="cpu", **options)
    with pytest.raises(ValueError, match=message):
        get_T2V_pipeline("cpu", **options)


def test_the_migration_shim_takes_the_reference_arguments_in_order(release_folder: Path) -> None:
    """``t2v_pipe(prompt, negative_prompt, image, width, height, fps, motion, ...)`` positionally, as
    the reference's ``__call__`` allows, reaches the FusionFrames pipeline with the same meaning."""
    t2v_pipe = get_T2V_pipeline("cpu", model=release_folder, dtype="float32")
    assert next(t2v_pipe.pipeline.components.video_movq.parameters()).dtype == torch.float32
    seen: dict = {}

    def capture(prompt, negative_prompt=None, image=None, **kwargs):
        seen.update(prompt=prompt, negative_prompt=negative_prompt, image=image, **kwargs)
        raise RuntimeError("stop")

    t2v_pipe.pipeline = capture  # type: ignore[assignment]
    img = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(RuntimeError, match="stop"):
        t2v_pipe("a panda", None, img, 640, 384, "medium", "high", 5.0, 5.0, 3.0, 0.5, 20, seed=1)
    assert seen["image"] is img and (seen["width"], seen["height"], seen["fps"]) == (640, 384, "medium")
    assert (
        seen["motion"] == "high" and seen["guidance_weight_image"] == 3.0 and seen["noise_augmentation"] == 20
    )
    assert seen["seed"] == 1 and seen["output_type"] == "pil"
    with pytest.raises(TypeError, match="multiple values for \\['image'\\]"):
        t2v_pipe("a panda", None, img, image=img)


def test_offload_needs_one_device_in_the_device_map(monkeypatch) -> None:
    refuse_loading(monkeypatch)
    monkeypatch.setattr("fusionframes.pipelines.text_to_video.validate_offload", lambda mode, device: mode)
    device_map = {"unet": "cpu", "interpolation_unet": "cpu", "text_encoder": "cpu", "movq": "cpu:0"}
    with pytest.raises(ValueError, match="offload: moves every network to one device"):
        get_T2V_pipeline(device_map, offload="model")
