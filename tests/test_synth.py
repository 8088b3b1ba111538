"""The synthetic shapes world: determinism, held-out triples, contrast rule, grammar round trip, shards."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from fusionframes import synthetic as S
from fusionframes.synthetic.motion import path_bounds

SAMPLES = 1500


def _scenes(seed: int = 0, n: int = SAMPLES, holdout_ok: bool = False) -> list[tuple[S.Scene, str]]:
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = S.sample_scene(rng, holdout_ok=holdout_ok)
        out.append((scene, S.caption(scene, rng)))
    return out


@pytest.fixture(scope="module")
def scenes() -> list[tuple[S.Scene, str]]:
    return _scenes()


def test_same_seed_same_sample_and_different_seed_differs():
    a, b, c = S.make_sample(3, 7, 64, 6), S.make_sample(3, 7, 64, 6), S.make_sample(4, 7, 64, 6)
    assert a[1] == b[1]
    assert json.dumps(a[2], sort_keys=True) == json.dumps(b[2], sort_keys=True)
    assert np.array_equal(a[0], b[0]) and a[0].dtype == np.uint8 and a[0].shape == (6, 64, 64, 3)
    assert (a[1], a[2]["scene"]) != (c[1], c[2]["scene"])


def test_held_out_triples_never_sampled_unless_allowed(scenes):
    seen = {(o.colour, o.shape, o.motion) for scene, _ in scenes for o in scene.objects}
    assert not seen & set(S.HELD_OUT)
    allowed = {(o.colour, o.shape, o.motion) for scene, _ in _scenes(1, 2500, True) for o in scene.objects}
    assert allowed & set(S.HELD_OUT)


def test_background_never_object_colour_nor_too_close(scenes):
    for scene, _ in scenes:
        for obj in scene.objects:
            assert obj.colour != scene.background
            assert S.contrast(obj.colour, scene.background, scene.gradient) >= S.MIN_CONTRAST
    assert not S.allowed_background("white", "beige") and not S.allowed_background("black", "navy")
    assert not S.allowed_background("purple", "navy", gradient=True) and S.allowed_background(
        "purple", "navy"
    )


def test_two_objects_differ_in_colour_and_no_rotating_circles(scenes):
    pairs = [scene for scene, _ in scenes if len(scene.objects) == 2]
    assert len(pairs) > SAMPLES // 5
    assert all(a.colour != b.colour for a, b in (p.objects for p in pairs))
    assert not any(o.shape == "circle" and o.motion == "rotating" for s, _ in scenes for o in s.objects)
    assert {o.motion for s, _ in scenes for o in s.objects} == set(S.MOTIONS)


def test_parse_prompt_recovers_every_caption(scenes):
    for scene, text in scenes:
        spec, want = S.parse_prompt(text), S.scene_spec(scene)
        assert spec is not None, text
        for key in ("background", "gradient", "camera_pan", "count"):
            assert spec[key] == want[key], text
        for got, obj in zip(spec["objects"], want["objects"], strict=True):
            assert (got["colour"], got["shape"], got["motion"]) == (
                obj["colour"],
                obj["shape"],
                obj["motion"],
            )
            assert got["speed"] in (None, obj["speed"]) and got["size"] in (None, obj["size"]), text


@pytest.mark.parametrize(
    "prompt, want",
    [
        ("a red circle moving right on a gray background", ("red", "circle", "moving right", "gray")),
        ("A Blue Square slides to the left, grey backdrop.", ("blue", "square", "moving left", "gray")),
        ("an orange star moving up-right quickly", ("orange", "star", "moving up-right", None)),
        (
            "a large white triangle spinning against a navy background",
            ("white", "triangle", "rotating", "navy"),
        ),
        ("a yellow circle on a teal gradient background", ("yellow", "circle", "still", "teal")),
        ("a green star bouncing up and down, black background", ("green", "star", "bouncing", "black")),
    ],
)
def test_parse_prompt_simple_user_prompts(prompt, want):
    spec = S.parse_prompt(prompt)
    obj = spec["objects"][0]
    assert (obj["colour"], obj["shape"], obj["motion"], spec["background"]) == want


def test_parse_prompt_two_objects_and_pan():
    spec = S.parse_prompt("two squares, a blue one falling and a yellow one rising, black background")
    assert [(o["colour"], o["shape"], o["motion"]) for o in spec["objects"]] == [
        ("blue", "square", "moving down"),
        ("yellow", "square", "moving up"),
    ]
    spec = S.parse_prompt("a red star growing slowly on a gray background, camera panning left")
    assert spec["camera_pan"] == "left" and spec["objects"][0]["speed"] == "slowly"


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat playing the piano",
        "a red circle riding a bicycle on a gray background",
        "a magenta circle moving right on a gray background",
        "a red circle moving right on a gray background and a blue star",
        "a red circle moving up and down",
        "a red circle, a blue square and a green star on a gray background",
        "",
    ],
)
def test_parse_prompt_rejects_prompts_outside_the_grammar(prompt):
    assert S.parse_prompt(prompt) is None


def test_holdout_prompts_parse_to_held_out_triples():
    prompts = S.holdout_prompts()
    assert len(prompts) == len(S.HELD_OUT)
    for prompt, triple in zip(prompts, S.HELD_OUT, strict=True):
        obj = S.parse_prompt(prompt)["objects"][0]
        assert (obj["colour"], obj["shape"], obj["motion"]) == triple


def test_objects_stay_in_frame_and_quick_motion_crosses_half_the_frame(scenes):
    size = 128
    for scene, _ in scenes[:300]:
        truth = S.ground_truth(scene, size, 8)
        for track in truth["tracks"]:
            for row in track["frames"]:
                x0, y0, x1, y1 = row["box"]
                assert x0 >= -1 and y0 >= -1 and x1 <= size + 1 and y1 <= size + 1
    obj = S.ObjectSpec("red", "circle", "moving right", "quickly", 0.2, (0.25, 0.5))
    track = S.ground_truth(S.Scene([obj], "gray"), size, 8)["tracks"][0]["frames"]
    travel = track[-1]["centroid"][0] - track[0]["centroid"][0]
    assert travel == pytest.approx(size / 2, rel=0.05)


def _path_middle(obj: S.ObjectSpec, pan: str | None) -> tuple[float, float]:
    lo_dx, hi_dx, lo_dy, hi_dy, _ = path_bounds(obj, pan)
    return obj.start[0] + (lo_dx + hi_dx) / 2, obj.start[1] + (lo_dy + hi_dy) / 2


def test_path_jitter_centres_paths_so_position_follows_the_words():
    # jitter 0: every lone object's path is centred in the frame, so "moving right" always starts on
    # the left; with jitter j the middle moves at most j; None keeps the old, place-anywhere stream
    for jitter in (0.0, 0.08):
        starts: dict[str, list[float]] = {"moving right": [], "moving left": []}
        for i in range(300):
            rng = np.random.default_rng([5, i])
            scene = S.sample_scene(rng, path_jitter=jitter)
            for obj in scene.objects:
                x, y = _path_middle(obj, scene.camera_pan)
                if len(scene.objects) == 1:
                    assert abs(x - 0.5) <= jitter + 1e-9 and abs(y - 0.5) <= jitter + 1e-9
                if obj.motion in starts:
                    starts[obj.motion].append(obj.start[0])
            truth = S.ground_truth(scene, 64, 4)
            for track in truth["tracks"]:
                for row in track["frames"]:
                    x0, y0, x1, y1 = row["box"]
                    assert x0 >= -1 and y0 >= -1 and x1 <= 65 and y1 <= 65
        assert max(starts["moving right"]) < 0.5 < min(starts["moving left"])
    anywhere = [S.sample_scene(np.random.default_rng([5, i])) for i in range(300)]
    rights = [o.start[0] for s in anywhere for o in s.objects if o.motion == "moving right"]
    assert any(x > 0.4 for x in rights) and any(x < 0.2 for x in rights)  # spread, not centred
    # the same scenes and captions as the default stream; only the starts move
    rng_a, rng_b = np.random.default_rng([5, 3]), np.random.default_rng([5, 3])
    a, b = S.sample_scene(rng_a), S.sample_scene(rng_b, path_jitter=0.08)
    assert [(o.colour, o.shape, o.motion) for o in a.objects] == [
        (o.colour, o.shape, o.motion) for o in b.objects
    ]
    assert S.caption(a, rng_a) == S.caption(b, rng_b)


def test_render_is_anti_aliased_and_uses_palette_colours():
    obj = S.ObjectSpec("red", "star", "rotating", "quickly", 0.3, (0.5, 0.5))
    clip = S.render_clip(S.Scene([obj], "gray"), 64, 4)
    colours = {tuple(p) for p in clip[0].reshape(-1, 3)}
    assert S.PALETTE["red"] in colours and S.BACKGROUNDS["gray"] in colours
    assert len(colours) > 10  # edge pixels blend object and background
    assert not np.array_equal(clip[0], clip[-1])


def test_scene_dict_round_trip_and_scene_from_spec():
    scene = _scenes(2, 1)[0][0]
    assert S.Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene
    spec = S.parse_prompt("a red circle moving up-left quickly and a blue star moving right quickly")
    made = S.scene_from_spec(spec, np.random.default_rng(0))
    assert [(o.colour, o.motion, o.speed) for o in made.objects] == [
        ("red", "moving up-left", "quickly"),
        ("blue", "moving right", "quickly"),
    ]
    assert all(S.allowed_background(o.colour, made.background) for o in made.objects)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: S.render_clip(S.Scene([S.ObjectSpec("red", "circle", "still")], "gray"), 31, 4), "size"),
        (lambda: S.render_clip(S.Scene([S.ObjectSpec("red", "circle", "still")], "gray"), 64, 1), "frames"),
        (lambda: S.ObjectSpec("magenta", "circle", "still"), "colour"),
        (lambda: S.ObjectSpec("red", "hexagon", "still"), "shape"),
        (lambda: S.ObjectSpec("red", "circle", "dancing"), "motion"),
        (lambda: S.Scene([S.ObjectSpec("red", "circle", "still")], "pink"), "background"),
        (lambda: S.write_shards("/tmp/never", 0), "videos"),
        (lambda: S.write_shards("/tmp/never", 1, shard_size=0), "shard_size"),
        (lambda: S.sample_scene(np.random.default_rng(0), two_objects=2.0), "two_objects"),
        (lambda: S.sample_scene(np.random.default_rng(0), path_jitter=0.7), "path_jitter"),
        (lambda: S.sample_scene(np.random.default_rng(0), path_jitter=True), "path_jitter"),
        (lambda: S.write_shards("/tmp/never", 1, path_jitter=-0.1), "path_jitter"),
    ],
)
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=rf"^{name}: "):
        call()


def _read_tar(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_write_shards_layout_determinism_and_manifest(tmp_path):
    a = S.write_shards(tmp_path / "a", 5, size=64, frames=6, seed=11, shard_size=2)
    b = S.write_shards(tmp_path / "b", 5, size=64, frames=6, seed=11, shard_size=2)
    assert [p.name for p in a] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp files left
    members = {}
    for pa, pb in zip(a, b, strict=True):
        ma, mb = _read_tar(pa), _read_tar(pb)
        assert ma.keys() == mb.keys()
        for name in ma:
            if name.endswith(".mp4"):
                assert np.array_equal(S.decode_mp4(ma[name]), S.decode_mp4(mb[name]))
            else:
                assert ma[name] == mb[name]
        members.update(ma)
    keys = sorted({name.split(".")[0] for name in members})
    assert keys == [f"{i:08d}" for i in range(5)]
    for key in keys:
        truth = json.loads(members[f"{key}.json"])
        assert truth["caption"] == members[f"{key}.txt"].decode()
        assert len(truth["tracks"][0]["frames"]) == 6 and truth["size"] == 64
        assert not {(o["colour"], o["shape"], o["motion"]) for o in truth["scene"]["objects"]} & set(
            S.HELD_OUT
        )
        frames = S.decode_mp4(members[f"{key}.mp4"])
        assert frames.shape == (6, 64, 64, 3)
        clip = S.make_sample(11, int(key), 64, 6)[0]
        assert np.abs(frames.astype(int) - clip).mean() < 4  # low-CRF H.264 keeps the picture
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["videos"] == 5 and manifest["seed"] == 11 and manifest["frames"] == 6
    assert manifest["path_jitter"] is None
    assert [tuple(h) for h in manifest["held_out"]] == list(S.HELD_OUT)


def test_shards_read_with_webdataset(tmp_path):
    wds = pytest.importorskip("webdataset")
    shards = S.write_shards(tmp_path, 3, size=64, frames=4, seed=0, shard_size=2)
    dataset = wds.WebDataset([str(p) for p in shards], shardshuffle=False, empty_check=False)
    samples = list(dataset)
    assert [s["__key__"] for s in samples] == ["00000000", "00000001", "00000002"]
    assert all({"mp4", "txt", "json"} <= set(s) for s in samples)
    assert S.decode_mp4(io.BytesIO(samples[0]["mp4"]).getvalue()).shape == (4, 64, 64, 3)


def test_data_synth_cli_path_jitter_reaches_the_shards_and_is_checked(tmp_path, capsys):
    from fusionframes import cli

    out = tmp_path / "centred"
    args = ["data", "synth", "--out", str(out), "--videos", "2", "--frames", "4", "--size", "64"]
    assert cli.main([*args, "--path-jitter", "0"]) == 0
    assert json.loads((out / "manifest.json").read_text())["path_jitter"] == 0.0
    truth = json.loads(_read_tar(out / "shard-000000.tar")["00000000.json"])
    scene = S.Scene.from_dict(truth["scene"])
    for obj in scene.objects:  # centred in the frame, or in its half of it
        for coordinate in _path_middle(obj, scene.camera_pan):
            assert min(abs(coordinate - c) for c in (0.25, 0.5, 0.75)) < 1e-9
    assert cli.main([*args[:3], str(tmp_path / "bad"), *args[4:], "--path-jitter", "0.9"]) != 0
    assert "path_jitter: must be" in capsys.readouterr().err and not (tmp_path / "bad").exists()
