"""In-memory H.264 MP4 encoding and decoding of uint8 clips (the shards' video format)."""

from __future__ import annotations

import io

import numpy as np


def encode_mp4(frames: np.ndarray, fps: int = 8, crf: int = 12) -> bytes:
    """H.264 (yuv420p, the format players expect) at a low CRF so the palette colours survive."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def decode_mp4(data: bytes) -> np.ndarray:
    """All frames of an in-memory MP4 as ``[T, H, W, 3]`` uint8."""
    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
