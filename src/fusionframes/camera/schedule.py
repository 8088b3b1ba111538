"""Per-frame parameter schedules written as keyframes: ``"0:(1.0), 24:(1.05), 48:(1.0)"``.

Each key is ``frame:(value)``; a value is a number or an expression in ``t`` (the frame index) built
from numbers, ``+ - * / ** %``, the constants ``pi``, ``e``, ``tau`` and a fixed set of math functions.
Expressions are parsed with :mod:`ast` and only whitelisted nodes are evaluated (never ``eval``), so a
schedule typed into a web form cannot reach Python.

Semantics (why: a key may be a function of ``t``, so "hold" and "interpolate" act on functions):

* between two keys ``k0 < k1`` the value is ``(1 - w) * f0(t) + w * f1(t)`` where ``w`` runs 0 -> 1
  over ``[k0, k1]`` (``linear``) or follows a cubic Hermite curve (``smooth``, see
  :func:`interpolate_keys`);
* before the first key the first key's expression is used, after the last key the last one's: a
  constant is held, ``"0:(1 + 0.002*t)"`` keeps growing.

Positions in error messages are 1-based character columns of the schedule text.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np

INTERPOLATIONS = ("linear", "smooth")
MAX_SCHEDULE_LENGTH = 10_000
MAX_EXPRESSION_NODES = 200

Evaluator = Callable[[np.ndarray], np.ndarray]

_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _variadic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda *args: reduce(fn, args)


def _log(x: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    return np.log(x) if base is None else np.log(x) / np.log(base)


# name -> (function, min args, max args); None = unbounded.
_FUNCTIONS: dict[str, tuple[Callable[..., np.ndarray], int, int | None]] = {
    "sin": (np.sin, 1, 1),
    "cos": (np.cos, 1, 1),
    "tan": (np.tan, 1, 1),
    "asin": (np.arcsin, 1, 1),
    "acos": (np.arccos, 1, 1),
    "atan": (np.arctan, 1, 1),
    "atan2": (np.arctan2, 2, 2),
    "sinh": (np.sinh, 1, 1),
    "cosh": (np.cosh, 1, 1),
    "tanh": (np.tanh, 1, 1),
    "abs": (np.abs, 1, 1),
    "sign": (np.sign, 1, 1),
    "sqrt": (np.sqrt, 1, 1),
    "exp": (np.exp, 1, 1),
    "log": (_log, 1, 2),
    "log2": (np.log2, 1, 1),
    "log10": (np.log10, 1, 1),
    "pow": (np.power, 2, 2),
    "hypot": (np.hypot, 2, 2),
    "floor": (np.floor, 1, 1),
    "ceil": (np.ceil, 1, 1),
    "round": (np.round, 1, 1),
    "min": (_variadic(np.minimum), 1, None),
    "max": (_variadic(np.maximum), 1, None),
    "clamp": (np.clip, 3, 3),
    "radians": (np.radians, 1, 1),
    "degrees": (np.degrees, 1, 1),
}

_BINARY: dict[type, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.true_divide,
    ast.Pow: np.power,
    ast.Mod: np.mod,
}
_UNARY: dict[type, Callable[[np.ndarray], np.ndarray]] = {ast.UAdd: np.positive, ast.USub: np.negative}

ALLOWED_NAMES = ("t", *sorted(_CONSTANTS))
ALLOWED_FUNCTIONS = tuple(sorted(_FUNCTIONS))


@dataclass(frozen=True)
class Keyframe:
    """One ``frame:(expression)`` entry; ``position`` is the 1-based column of the frame number."""

    frame: int
    expression: str
    position: int
    expression_position: int


class _Error:
    """Builds one-line messages ``'<name>: <what> at position N in <text>'``."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text

    def __call__(self, what: str, index: int | None = None) -> ValueError:
        where = "" if index is None else f" at position {index + 1}"
        return ValueError(f"{self.name}: {what}{where} in {self.text!r}")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _read_frame(text: str, i: int, err: _Error) -> tuple[int, int]:
    """Reads an optionally signed integer frame number starting at ``i``."""
    j = i + 1 if i < len(text) and text[i] in "+-" else i
    k = j
    while k < len(text) and text[k].isdigit():
        k += 1
    if k == j:
        raise err("expected a frame number", i)
    return int(text[i:k]), k


def _read_value(text: str, i: int, err: _Error) -> tuple[str, int]:
    """Reads ``(...)`` with nested parentheses; returns the inside and the index after ``)``."""
    if i >= len(text) or text[i] != "(":
        raise err("expected '('", i)
    depth = 0
    for k in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[k], 0)
        if depth == 0:
            if not text[i + 1 : k].strip():
                raise err("empty value", i)
            return text[i + 1 : k], k + 1
    raise err("unclosed '('", i)


def parse_keyframes(text: str, *, name: str = "schedule") -> list[Keyframe]:
    """Splits schedule text into keyframes in order of appearance (syntax only, no evaluation)."""
    if not isinstance(text, str):
        raise ValueError(f"{name}: expected a string like '0:(1.0), 24:(1.05)', got {type(text).__name__}")
    err = _Error(name, text)
    if len(text) > MAX_SCHEDULE_LENGTH:
        raise ValueError(f"{name}: schedule is longer than {MAX_SCHEDULE_LENGTH} characters")
    keys: list[Keyframe] = []
    i = _skip_space(text, 0)
    if i == len(text):
        raise ValueError(
            f"{name}: empty schedule; expected 'frame:(value)' pairs such as '0:(1.0), 24:(1.05)'"
        )
    while i < len(text):
        frame_at = i
        frame, i = _read_frame(text, i, err)
        i = _skip_space(text, i)
        if i >= len(text) or text[i] != ":":
            raise err("expected ':'", i)
        i = _skip_space(text, i + 1)
        expression_at = i + 1
        expression, i = _read_value(text, i, err)
        keys.append(Keyframe(frame, expression, frame_at + 1, expression_at + 1))
        i = _skip_space(text, i)
        if i < len(text):
            if text[i] != ",":
                raise err("expected ',' or end of schedule", i)
            i = _skip_space(text, i + 1)  # a trailing comma is allowed
    return keys


def _node_position(node: ast.AST, expression: str, offset: int) -> int:
    """0-based index into the schedule text; ``col_offset`` counts UTF-8 bytes."""
    col = getattr(node, "col_offset", 0)
    return offset + len(expression.encode()[:col].decode(errors="ignore"))


def compile_expression(
    expression: str, *, name: str = "schedule", text: str | None = None, offset: int = 0
) -> Evaluator:
    """Compiles a safe arithmetic expression in ``t`` into a vectorised numpy function of ``t``.

    ``text``/``offset`` place error positions inside a larger schedule string (0-based offset).
    """
    source = expression if text is None else text
    err = _Error(name, source)
    flat = expression.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    body = flat.lstrip()
    lead = len(flat) - len(body)
    if not body:
        raise err("empty expression", offset)
    try:
        tree = ast.parse(body, mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        col = (getattr(exc, "offset", None) or 1) - 1
        raise err("invalid expression syntax", offset + lead + max(0, min(col, len(body) - 1))) from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_EXPRESSION_NODES:
        raise err(f"expression too complex ({nodes} nodes, at most {MAX_EXPRESSION_NODES})", offset + lead)
    return _build(tree.body, body, offset + lead, err)


def _build(node: ast.AST, expression: str, offset: int, err: _Error) -> Evaluator:
    """Turns one whitelisted AST node into a closure; anything else is rejected with its position."""
    at = _node_position(node, expression, offset)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise err(f"only numbers are allowed as literals, got {type(node.value).__name__}", at)
        value = float(node.value)
        return lambda t: np.full_like(t, value)
    if isinstance(node, ast.Name):
        if node.id == "t":
            return lambda t: t
        if node.id in _CONSTANTS:
            const = _CONSTANTS[node.id]
            return lambda t: np.full_like(t, const)
        if node.id in _FUNCTIONS:
            raise err(f"function '{node.id}' must be called", at)
        raise err(f"unknown name '{node.id}' (allowed: {', '.join(ALLOWED_NAMES)})", at)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        unary, operand = _UNARY[type(node.op)], _build(node.operand, expression, offset, err)
        return lambda t: unary(operand(t))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        binary = _BINARY[type(node.op)]
        left, right = _build(node.left, expression, offset, err), _build(node.right, expression, offset, err)
        return lambda t: binary(left(t), right(t))
    if isinstance(node, ast.Call):
        return _build_call(node, expression, offset, err)
    if isinstance(node, ast.Attribute):
        raise err("attribute access is not allowed", at)
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        raise err(f"operator {type(node.op).__name__} is not allowed (allowed: + - * / ** %)", at)
    raise err(f"{type(node).__name__} is not allowed in expressions", at)


def _build_call(node: ast.Call, expression: str, offset: int, err: _Error) -> Evaluator:
    at = _node_position(node, expression, offset)
    if not isinstance(node.func, ast.Name):
        if isinstance(node.func, ast.Attribute):
            raise err("attribute access is not allowed", _node_position(node.func, expression, offset))
        raise err("only calls of named functions are allowed", at)
    fname = node.func.id
    if fname not in _FUNCTIONS:
        raise err(f"unknown function '{fname}' (allowed: {', '.join(ALLOWED_FUNCTIONS)})", at)
    if node.keywords:
        raise err(f"keyword arguments are not allowed in '{fname}'", at)
    if any(isinstance(a, ast.Starred) for a in node.args):
        raise err(f"starred arguments are not allowed in '{fname}'", at)
    fn, low, high = _FUNCTIONS[fname]
    if len(node.args) < low or (high is not None and len(node.args) > high):
        expected = str(low) if low == high else f"{low}+" if high is None else f"{low}-{high}"
        raise err(f"'{fname}' takes {expected} argument(s), got {len(node.args)}", at)
    args = [_build(a, expression, offset, err) for a in node.args]
    return lambda t: fn(*(a(t) for a in args))


def evaluate(evaluator: Evaluator, t: np.ndarray) -> np.ndarray:
    """Runs a compiled expression on frame indices, returning float64 of ``t``'s shape."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(evaluator(t), dtype=np.float64), t.shape).copy()


def evaluate_expression(expression: str, t: float | np.ndarray, *, name: str = "schedule") -> np.ndarray:
    """Evaluates a single safe expression (e.g. ``"1 + 0.002*t"``) at frame index/indices ``t``."""
    return evaluate(compile_expression(expression, name=name), np.asarray(t, dtype=np.float64))


def interpolate_keys(
    frames: np.ndarray, values: np.ndarray, t: np.ndarray, interpolation: str = "linear"
) -> np.ndarray:
    """Interpolates key values ``values[k, i]`` (key ``k`` evaluated at ``t[i]``) at the frames ``t``.

    ``smooth`` is a cubic Hermite spline with Catmull-Rom tangents (central differences over the
    neighbouring keys, scaled for uneven spacing) and zero slope at the first and last key, so the curve
    passes through every key, has a continuous first derivative and eases into the held ends. With two
    keys it reduces to smoothstep. Like any Catmull-Rom curve it can overshoot slightly between keys.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    frames = np.asarray(frames, dtype=np.float64)
    if len(frames) == 1:
        return values[0].copy()
    k = np.clip(np.searchsorted(frames, t, side="right") - 1, 0, len(frames) - 2)
    cols = np.arange(len(t))
    k0, k1 = frames[k], frames[k + 1]
    u = np.clip((t - k0) / (k1 - k0), 0.0, 1.0)
    p0, p1 = values[k, cols], values[k + 1, cols]
    if interpolation == "linear":
        return p0 + (p1 - p0) * u
    slopes = np.zeros_like(values)
    if len(frames) > 2:
        slopes[1:-1] = (values[2:] - values[:-2]) / (frames[2:] - frames[:-2])[:, None]
    h = k1 - k0
    u2, u3 = u * u, u * u * u
    return (
        (2 * u3 - 3 * u2 + 1) * p0
        + (u3 - 2 * u2 + u) * h * slopes[k, cols]
        + (-2 * u3 + 3 * u2) * p1
        + (u3 - u2) * h * slopes[k + 1, cols]
    )


def _check_num_frames(num_frames: int) -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer) or num_frames < 1:
        raise ValueError(f"num_frames: must be an integer >= 1, got {num_frames!r}")
    return int(num_frames)


def parse_schedule(
    text: str, num_frames: int, interpolation: str = "linear", *, name: str = "schedule"
) -> np.ndarray:
    """Evaluates a keyframe schedule to one float64 value per frame (``shape == (num_frames,)``)."""
    num_frames = _check_num_frames(num_frames)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    err = _Error(name, text)
    keys = parse_keyframes(text, name=name)
    seen: dict[int, Keyframe] = {}
    for key in keys:
        if not 0 <= key.frame < num_frames:
            raise err(f"frame {key.frame} is out of range 0..{num_frames - 1}", key.position - 1)
        if key.frame in seen:
            raise err(
                f"duplicate frame {key.frame} (first at position {seen[key.frame].position})",
                key.position - 1,
            )
        seen[key.frame] = key
    keys = sorted(keys, key=lambda k: k.frame)
    t = np.arange(num_frames, dtype=np.float64)
    values = np.stack(
        [
            evaluate(
                compile_expression(k.expression, name=name, text=text, offset=k.expression_position - 1), t
            )
            for k in keys
        ]
    )
    for k, row in zip(keys, values, strict=True):
        bad = np.flatnonzero(~np.isfinite(row))
        if bad.size:
            raise err(f"value is not finite at frame {bad[0]}", k.expression_position - 1)
    return interpolate_keys(np.array([k.frame for k in keys]), values, t, interpolation)


ScheduleLike = str | float | int | Sequence[float] | np.ndarray


def schedule_values(
    value: ScheduleLike, num_frames: int, interpolation: str = "linear", *, name: str = "schedule"
) -> np.ndarray:
    """Accepts a schedule string, a constant, or one value per frame; returns float64 ``[num_frames]``."""
    num_frames = _check_num_frames(num_frames)
    if isinstance(value, str):
        return parse_schedule(value, num_frames, interpolation, name=name)
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a schedule string, a number or {num_frames} numbers, got bool")
    if isinstance(value, int | float | np.number):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name}: must be finite, got {value!r}")
        return np.full(num_frames, float(value))
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a schedule string, a number or {num_frames} numbers") from None
    if arr.shape != (num_frames,):
        raise ValueError(f"{name}: expected {num_frames} per-frame values, got shape {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: per-frame values must be finite")
    return arr.copy()
