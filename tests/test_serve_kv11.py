"""The server with a model whose pipeline takes an image and a motion level (a tiny Kandinsky Video 1.1
model, random weights) and with one that does not (the tiny 1.0 test model): the API offers image-to-
video and the motion level only for the first, and names the field in a 422 for the second.

In-process (FastAPI's TestClient, real stores and worker threads), so the model loads once per app.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_pipeline_kv11 import make_components

from fusionframes.io.checkpoints import model_config_for, write_model_folder
from fusionframes.io.video import read_video

FAST_11 = {"num_inference_steps": 2, "interpolation_steps": 1, "num_keyframes": 3, "fps": "low"}

pytestmark = pytest.mark.slow  # two in-process servers, one with a 1.1 model built for it: about 20 s


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    image = Image.new(mode, size, colour if mode == "RGB" else colour[0])
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_kv11_model(root: Path) -> Path:
    """A model folder of the tiny 1.1 architecture (image MoVQ and temporal MoVQ, random weights)."""
    components, text_dir = make_components(root)
    return write_model_folder(components, root / "model", text_encoder_dir=text_dir)


@pytest.fixture(scope="module")
def kv11_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_kv11_model(tmp_path_factory.mktemp("serve11"))


def client_for(model: Path, data_dir: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from fusionframes.serve.app import ServeConfig, create_app
    from fusionframes.serve.runners import Pipelines

    app = create_app(
        ServeConfig(data_dir=data_dir, model=str(model), device="cpu"),
        model_config=model_config_for(str(model)),
        pool_loader=lambda: Pipelines(str(model), "cpu", "float32", threads=1),
    )
    with TestClient(app, base_url="http://127.0.0.1") as client:
        deadline = time.monotonic() + 120
        while client.get("/api/health").status_code != 200:
            assert time.monotonic() < deadline, "the worker did not load the model"
            time.sleep(0.1)
        yield client


@pytest.fixture(scope="module")
def kv11(kv11_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from client_for(kv11_model_dir, tmp_path_factory.mktemp("data11"))


@pytest.fixture(scope="module")
def kv10(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from client_for(tiny_model_dir, tmp_path_factory.mktemp("data10"))


def finished(client: Any, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/api/jobs/{job_id}").json())["status"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "done", job
    return job


def frames(client: Any, job_id: str, tmp_path: Path) -> np.ndarray:
    path = tmp_path / f"{job_id}.mp4"
    path.write_bytes(client.get(f"/api/jobs/{job_id}/video").content)
    return read_video(path)[0]


def refused(response: Any, field: str, text: str) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(d["loc"][1] == field and text in d["msg"] for d in detail), detail


def test_models_say_what_each_model_takes(kv11: Any, kv10: Any) -> None:
    current = kv11.get("/api/models").json()["current"]
    assert current["inputs"] == ["image", "motion"] and current["notes"] == []
    assert current["motion_levels"] == {"low": 1, "medium": 10, "high": 50, "extreme": 100}
    assert current["image"]["max_bytes"] == 8 * 2**20
    plain = kv10.get("/api/models").json()["current"]
    assert plain["inputs"] == [] and "image" not in plain
    assert any("image-to-video" in note for note in plain["notes"])
    assert any("motion level" in note for note in plain["notes"])


def test_image_to_video_with_a_motion_level(kv11: Any, tmp_path: Path) -> None:
    red, blue = png((220, 30, 30)), png((30, 30, 220))
    first = kv11.post(
        "/api/jobs",
        json={
            "prompt": "a circle",
            **FAST_11,
            "seed": 3,
            "motion": "high",
            "image": "data:image/png;base64," + b64(red),
        },
    )
    assert first.status_code == 201, first.text
    made = first.json()
    assert [s["name"] for s in made["stages"]] == ["keyframes", "decoding"]  # no first frame to draw
    assert made["request"]["image"] == {
        "sha256": hashlib.sha256(red).hexdigest(),
        "bytes": len(red),
        "width": 64,
        "height": 64,
        "format": "PNG",
    }
    again = kv11.post(
        "/api/jobs", json={"prompt": "a circle", **FAST_11, "seed": 3, "motion": "high", "image": b64(red)}
    ).json()
    other = kv11.post(
        "/api/jobs", json={"prompt": "a circle", **FAST_11, "seed": 3, "motion": "high", "image": b64(blue)}
    ).json()
    scored = kv11.post("/api/jobs", json={"prompt": "a circle", **FAST_11, "seed": 3, "motion": 50}).json()
    jobs = [finished(kv11, job["id"]) for job in (made, again, other, scored)]
    assert [j["settings"]["image_to_video"] for j in jobs] == [True, True, True, False]
    assert [j["settings"]["motion_score"] for j in jobs] == [50, 50, 50, 50]
    assert jobs[0]["result"]["num_frames"] == 3
    videos = [frames(kv11, job["id"], tmp_path) for job in jobs]
    assert np.array_equal(videos[0], videos[1])  # the same image and seed: the same video
    assert not np.array_equal(videos[0], videos[2])  # the image reached the network
    image = kv11.get(f"/api/jobs/{made['id']}/image")
    assert image.status_code == 200 and image.content == red and image.headers["content-type"] == "image/png"
    assert kv11.get(f"/api/jobs/{scored['id']}/image").status_code == 404
    assert kv11.delete(f"/api/jobs/{made['id']}").status_code == 204
    assert kv11.get(f"/api/jobs/{made['id']}/image").status_code == 404
    store = kv11.app.state.context.store
    assert store.input_image(made["id"]) is None and store.input_image(again["id"]) == red


@pytest.mark.parametrize(
    ("image", "text"),
    [
        ("not base64!", "not base64"),
        (b64(b"hello, not an image"), "not an image file"),
        (b64(png((1, 2, 3), (5000, 4000))), "more than 16777216 pixels"),
        (b64(png((1, 2, 3), mode="I;16")), "not an 8-bit image"),
    ],
    ids=["base64", "unreadable", "pixels", "mode"],
)
def test_bad_images_are_422_naming_image(kv11: Any, image: str, text: str) -> None:
    refused(kv11.post("/api/jobs", json={"prompt": "x", **FAST_11, "image": image}), "image", text)
    refused(kv11.post("/v1/videos", json={"prompt": "x", "input_reference": image}), "input_reference", text)


def test_other_fields_of_11_models(kv11: Any) -> None:
    refused(kv11.post("/api/jobs", json={"prompt": "x", "motion": "fast"}), "motion", "unknown 'fast'")
    refused(kv11.post("/api/jobs", json={"prompt": "x", "motion": 1001}), "motion", "less than or equal")
    refused(kv11.post("/api/jobs", json={"prompt": "x", "scheduler": "ddim"}), "scheduler", "DDPM only")
    refused(kv11.post("/api/jobs", json={"prompt": "x", "mode": "animate"}), "mode", "no animation path")
    refused(
        kv11.post("/v1/videos", json={"prompt": "x", "image": b64(png((1, 1, 1)))}),
        "image",
        "input_reference",
    )
    video = kv11.post("/v1/videos", json={"prompt": "x", "input_reference": b64(png((9, 9, 9))), **FAST_11})
    assert video.status_code == 200, video.text
    job = finished(kv11, video.json()["id"].removeprefix("video_"))
    assert job["settings"]["image_to_video"] is True


def test_models_without_them_name_the_field(kv10: Any) -> None:
    image = b64(png((220, 30, 30)))
    refused(kv10.post("/api/jobs", json={"prompt": "x", "image": image}), "image", "does not animate images")
    refused(kv10.post("/api/jobs", json={"prompt": "x", "motion": "high"}), "motion", "takes no motion level")
    refused(
        kv10.post("/v1/videos", json={"prompt": "x", "input_reference": image}),
        "input_reference",
        "does not animate images",
    )
    refused(
        kv10.post("/api/jobs", json={"prompt": "x", "mode": "animate", "motion": 5}),
        "motion",
        "a number is a motion level",
    )
    big = kv10.post("/api/jobs", json={"prompt": "x", "image": "A" * 70_000})  # no image upload here
    assert big.status_code == 413
