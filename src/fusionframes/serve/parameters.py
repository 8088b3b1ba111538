"""The one place a job's parameters are checked against the model served, for both APIs.

Three layers, in this order, each naming the field it refuses (422):

1. the schema (:class:`fusionframes.serve.schemas.JobRequest`): types and bounds, checked by FastAPI;
2. :func:`check_request` here: what the model's pipeline takes
   (:func:`fusionframes.serve.runners.model_inputs`: an ``image`` for image-to-video, a ``motion``
   level in mode ``t2v``), and the image itself (readable, not too large), decoded from base64;
3. the mode's runner (:func:`fusionframes.serve.runners.prepare`): sizes, frame counts and every
   option against the model's config, the same code a worker runs before it renders.

A new job parameter that depends on the model adds its check to :func:`check_request`, as ``lora``
(adapters, :mod:`fusionframes.serve.adapters`) does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass
from typing import Any

from fusionframes.pipelines.kandinsky11 import MOTION_MAX, MOTION_SCORES
from fusionframes.serve.adapters import AdapterRoot, check_lora

MAX_IMAGE_BYTES = 8 * 2**20  # an uploaded image file (PNG, JPEG, WebP, ...)
MAX_IMAGE_PIXELS = 4096 * 4096  # larger images are refused before they are decoded (decompression bombs)
MAX_IMAGE_TEXT = (MAX_IMAGE_BYTES + 2) // 3 * 4 + 200  # its base64 text, with a data: URL prefix
DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+)?(;[a-z0-9=.+-]+)*;base64,", re.IGNORECASE)
MOTION_NOTE = "a motion level needs a model whose pipeline takes one (Kandinsky Video 1.1)"
IMAGE_NOTE = "image-to-video needs a model whose pipeline takes a first image (Kandinsky Video 1.1)"


@dataclass
class CheckedRequest:
    """A request's parameters as they are stored (an image replaced by its description) and the
    image's bytes, which the store keeps beside the job."""

    params: dict[str, Any]
    image: bytes | None = None


def check_request(
    mode: str,
    params: dict[str, Any],
    inputs: tuple[str, ...],
    model_name: str,
    adapters: AdapterRoot | None = None,
) -> CheckedRequest:
    """Refuse what the served model cannot take (``ValueError("field: ...")``); decode the image; read
    and check the adapters of ``lora`` (``adapters``: the server's ``--lora-dir``, None: none offered)."""
    if params.get("lora") is not None:
        params = {**params, "lora": check_lora(params["lora"], adapters, model_name)}
    motion = params.get("motion")
    if mode == "t2v" and motion is not None and "motion" not in inputs:
        raise ValueError(
            f"motion: the served model {model_name!r} takes no motion level ({MOTION_NOTE}); "
            "camera moves are mode 'animate'"
        )
    if mode != "t2v" and isinstance(motion, int | float):
        raise ValueError(
            f"motion: in mode {mode!r} it is a camera preset or schedule; a number is a motion level "
            "(mode 't2v')"
        )
    text = params.get("image")
    if text is None:
        return CheckedRequest(params)
    if mode != "t2v":
        raise ValueError(f"image: mode {mode!r} takes no image; image-to-video is mode 't2v'")
    if "image" not in inputs:
        raise ValueError(f"image: the served model {model_name!r} does not animate images ({IMAGE_NOTE})")
    data = decode_image_text(text)
    return CheckedRequest({**params, "image": describe_image(data)}, data)


def decode_image_text(text: str, name: str = "image") -> bytes:
    """Base64 (or a ``data:image/...;base64,`` URL) -> the file's bytes, checked to be an image PIL
    reads, of an 8-bit mode, at most :data:`MAX_IMAGE_BYTES` and :data:`MAX_IMAGE_PIXELS`."""
    body = DATA_URL.sub("", text.strip(), count=1)
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: not base64 (send the file as base64 or a data: URL)") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"{name}: {len(data)} bytes is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    open_image(data, name)
    return data


def open_image(data: bytes, name: str = "image") -> Any:
    """The PIL image of an uploaded file, fully decoded; one-line errors naming ``name``."""
    from PIL import Image, UnidentifiedImageError

    from fusionframes.pipelines.first_frame import IMAGE_MODES

    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"{name}: {width}x{height} has more than {MAX_IMAGE_PIXELS} pixels; send a smaller image"
                )
            if opened.mode not in IMAGE_MODES:
                raise ValueError(
                    f"{name}: mode {opened.mode!r} is not an 8-bit image; allowed: {', '.join(IMAGE_MODES)}"
                )
            opened.load()
            image = opened.copy()
            image.format = opened.format  # copies do not keep it
            return image
    except UnidentifiedImageError:
        raise ValueError(f"{name}: not an image file PIL reads (PNG, JPEG, WebP, ...)") from None
    except (OSError, Image.DecompressionBombError, SyntaxError) as error:
        raise ValueError(f"{name}: a damaged image file ({str(error).splitlines()[0]})") from None


def describe_image(data: bytes) -> dict[str, Any]:
    """What a job's stored parameters say of its image (the bytes stay out of listings)."""
    image = open_image(data)
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "width": image.size[0],
        "height": image.size[1],
        "format": image.format or "unknown",
    }


def inputs_info(inputs: tuple[str, ...]) -> dict[str, Any]:
    """For ``/api/models`` and the page: what the model takes beyond a prompt, and what it does not."""
    info: dict[str, Any] = {"inputs": list(inputs), "notes": []}
    if "image" in inputs:
        info["image"] = {"max_bytes": MAX_IMAGE_BYTES, "max_pixels": MAX_IMAGE_PIXELS}
    else:
        info["notes"].append(IMAGE_NOTE)
    if "motion" in inputs:
        info["motion_levels"] = dict(MOTION_SCORES)
        info["motion_max"] = MOTION_MAX
    else:
        info["notes"].append(MOTION_NOTE)
    return info
