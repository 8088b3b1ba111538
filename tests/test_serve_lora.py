"""Serve jobs with LoRA adapters (job parameter ``lora``), against real server processes.

One server with ``--lora-dir`` (1 worker, so every job runs on the same networks one after another) and
one without. Checked: an adapter changes the video; the next job without ``lora`` is the base video (bit
for bit on a quiet machine; see :func:`same_video`); scale 0 is the base video; the object and the
string forms agree; bad adapters (missing, corrupt, another base model, another component, a non-finite
scale, paths outside the folder) are 422 naming ``lora`` before anything is queued; a server without
``--lora-dir`` refuses ``lora``; the schema documents the parameter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import make_tiny_model
from test_serve import FAST, ServerProcess, wait_for

from fusionframes.io.checkpoints import load_model_folder
from fusionframes.io.video import read_video
from fusionframes.lora.files import ADAPTER_WEIGHTS, MANIFEST, save_adapter
from fusionframes.lora.layers import LoraSpec, attach, lora_config, resolve_targets, weights_hash
from fusionframes.lora.pipeline import unload_lora

pytestmark = pytest.mark.slow  # two server processes start once per module (30-70 s on 2 shared cores)


def write_adapter(model_dir: Path, folder: Path, component: str = "keyframe_unet") -> Path:
    """An adapter of ``model_dir``'s ``component`` with large random low-rank tensors (a trained one's,
    in effect, strong enough to show through the 8-bit video)."""
    components = load_model_folder(model_dir)
    unet = getattr(components, component)
    base_hash = weights_hash(unet)
    attach(unet, lora_config(LoraSpec(4, 8.0), resolve_targets(unet, "attention+temporal")), "tmp")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    save_adapter(unet, "tmp", folder, component, components.name, base_hash)
    unload_lora(components)
    return folder


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("adapters")
    folder = root / "lora"
    write_adapter(tiny_model_dir, folder / "good")
    write_adapter(tiny_model_dir, folder / "styles" / "interp", "interpolation_unet")
    other = make_tiny_model(tmp_path_factory.mktemp("other-model"), seed=1)
    write_adapter(other, folder / "other-base")
    wrong = write_adapter(tiny_model_dir, folder / "wrong-component")
    manifest = json.loads((wrong / MANIFEST).read_text())
    (wrong / MANIFEST).write_text(json.dumps({**manifest, "component": "interpolation_unet"}))
    corrupt = write_adapter(tiny_model_dir, folder / "corrupt")
    data = (corrupt / ADAPTER_WEIGHTS).read_bytes()
    (corrupt / ADAPTER_WEIGHTS).write_bytes(data[: len(data) // 2])
    write_adapter(tiny_model_dir, root / "outside")
    os.symlink(root / "outside", folder / "escape")
    return folder


@pytest.fixture(scope="module")
def servers(
    tiny_model_dir: Path, adapters: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    root = tmp_path_factory.mktemp("serve-lora")
    procs = {
        "lora": ServerProcess(tiny_model_dir, root / "lora", "--lora-dir", str(adapters)),
        "plain": ServerProcess(tiny_model_dir, root / "plain"),
    }
    for proc in procs.values():
        proc.start()
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture(scope="module")
def api(servers: dict[str, ServerProcess]) -> Iterator[httpx.Client]:
    with servers["lora"].wait_ready().client() as client:
        yield client


def video(server: ServerProcess, client: httpx.Client, **body) -> tuple[dict, np.ndarray]:
    """Run one job (seed 5, interpolated) to the end; its request as stored, and its decoded frames."""
    sent = {"prompt": "a red circle moving right", **FAST, "fps": "medium", "interpolation_steps": 2}
    response = client.post("/api/jobs", json={**sent, "seed": 5, **body})
    assert response.status_code == 201, response.text
    job = wait_for(client, response.json()["id"])
    return job["request"], read_video(server.data_dir / "outputs" / f"{job['id']}.mp4")[0]


def same_video(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical, or off by the server's own run-to-run wobble: on a loaded machine two identical jobs
    without any adapter (a server without --lora-dir) differed now and then in up to 5,298 of 159,744
    values by at most 13 (measured 2026-12-02; its cause is not known yet). An adapter left attached
    changes almost every value (154,306 of 159,744, by up to 169), so this still fails on a trace."""
    if np.array_equal(a, b):
        return True
    delta = np.abs(a.astype(int) - b.astype(int))
    return bool((delta > 0).mean() < 0.05 and delta.max() <= 16)


def test_adapter_applies_to_its_job_only(servers: dict[str, ServerProcess], api: httpx.Client) -> None:
    server = servers["lora"]
    _, base = video(server, api)
    request, adapted = video(server, api, lora=["good"])
    assert request["lora"] == [{"path": "good", "scale": 1.0}]  # stored in the form that re-makes it
    assert not same_video(adapted, base)
    _, after = video(server, api)  # the next job without lora: the base networks exactly
    assert same_video(after, base)
    _, same = video(server, api, lora=[{"path": "good", "scale": 1}])
    assert same_video(same, adapted)
    _, off = video(server, api, lora=["good:0"])
    assert same_video(off, base)
    _, both = video(server, api, lora=["good:0.5", {"path": "styles/interp"}])
    assert not same_video(both, base) and not same_video(both, adapted)
    _, again = video(server, api, **{k: v for k, v in request.items() if k != "lora"})
    assert same_video(again, base)


@pytest.mark.parametrize(
    ("lora", "reason"),
    [
        (["absent"], "'absent': adapter folder not found: absent"),
        (["corrupt"], "'corrupt': corrupt/adapter_model.safetensors is corrupt"),
        (["other-base"], "'other-base' does not fit the served model: it was trained on base model"),
        (["wrong-component"], "its manifest says interpolation_unet, but it was trained on this model's"),
        (["good:inf"], "the scale of 'good' must be a finite number"),
        (["good:nan"], "the scale of 'good' must be a finite number"),
        (["../outside"], "'../outside' leaves the server's adapters folder"),
        (["escape"], "'escape' leaves the server's adapters folder"),
        (["/etc"], "must be a path relative to the server's adapters folder"),
        (["good"] * 9, None),  # the schema's bound: 8 adapters per job
        ([{"path": "good", "scale": "x"}], None),
        ([{"path": "good", "weight": 1}], None),
        ([], None),
    ],
)
def test_bad_adapters_are_422_naming_lora(
    api: httpx.Client, adapters: Path, lora: list, reason: str | None
) -> None:
    before = api.get("/api/jobs").json()["total"]
    response = api.post("/api/jobs", json={"prompt": "x", **FAST, "lora": lora})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"][:2] == ["body", "lora"]
    if reason is not None:
        assert reason in detail["msg"] and str(adapters) not in detail["msg"]  # no server paths
    assert api.get("/api/jobs").json()["total"] == before  # nothing queued


def test_a_server_without_lora_dir_refuses_lora(servers: dict[str, ServerProcess]) -> None:
    with servers["plain"].wait_ready().client() as client:
        response = client.post("/api/jobs", json={"prompt": "x", **FAST, "lora": ["good"]})
        assert response.status_code == 422
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "lora"] and "--lora-dir" in detail["msg"]
        assert client.get("/api/models").json()["current"]["lora"]["enabled"] is False


def test_schema_and_models_document_lora(api: httpx.Client) -> None:
    from jsonschema import Draft202012Validator

    info = api.get("/api/models").json()["current"]["lora"]
    # the adapters for this model (by their manifests): not the one made on another base model
    assert info["enabled"] is True and {"good", "styles/interp"} <= set(info["adapters"])
    assert "other-base" not in info["adapters"]
    schema = api.get("/openapi.json").json()
    schemas = schema["components"]["schemas"]
    assert "lora" in schemas["JobRequest"]["properties"] and "LoraEntry" in schemas
    request = {"$defs": schemas, **schemas["JobRequest"]}
    validator = Draft202012Validator(
        json.loads(json.dumps(request).replace("#/components/schemas/", "#/$defs/"))
    )
    assert validator.is_valid({"prompt": "x", "lora": ["good:0.5", {"path": "good", "scale": 2}]})
    assert not validator.is_valid({"prompt": "x", "lora": [1]})
    assert not validator.is_valid({"prompt": "x", "lora": [{"scale": 1}]})
    assert not validator.is_valid({"prompt": "x", "lora": []})
