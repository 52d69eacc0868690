"""Checks of what a client sends to the sessions API, each failure a 400 naming the field.

Strict on types: an argv is a list of strings (a number is not silently turned into one), a
timeout is a number (not a boolean), an environment maps names to strings.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re

from django.conf import settings
from rest_framework.exceptions import ValidationError

from apps.sandboxing.policy import MINIMA
from apps.sessions.limits import LANGUAGES, images, session_limits
from apps.sessions.services import SessionError, resolve_path

CREATE_FIELDS = {"language", "image", "memory_mb", "cpus", "idle_timeout_s", "max_lifetime_s", "metadata"}
EXEC_FIELDS = {"cmd", "input", "input_base64", "env", "cwd", "timeout_s", "user"}
MAX_METADATA_BYTES = 16 * 1024
MAX_ARGV_BYTES = 2 * 1024 * 1024
MAX_ARGS = 16 * 1024
MAX_ENV = 256
MAX_ENV_BYTES = 256 * 1024
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _unknown(body: dict, known: set[str]) -> None:
    extra = sorted(set(body) - known)
    if extra:
        raise ValidationError({name: ["Unknown field."] for name in extra})


def _number(body: dict, name: str, default, low, high, *, integer: bool = False):
    value = body.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError({name: ["Must be a number."]})
    if integer and value != int(value):
        raise ValidationError({name: ["Must be a whole number."]})
    if not low <= value <= high:
        raise ValidationError({name: [f"Must be between {low:g} and {high:g}."]})
    return int(value) if integer else float(value)


def _text(value, name: str, *, most: int) -> str:
    if not isinstance(value, str):
        raise ValidationError({name: ["Must be a string."]})
    if "\0" in value:
        raise ValidationError({name: ["Must not contain NUL characters."]})
    if len(value) > most:
        raise ValidationError({name: [f"Must be at most {most} characters."]})
    return value


def session_fields(body) -> dict:
    """The fields of a new session, with the operator's defaults filled in."""
    if not isinstance(body, dict):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    _unknown(body, CREATE_FIELDS)
    language = body.get("language")
    language = "python" if language is None else language
    if language not in LANGUAGES:
        raise ValidationError({"language": [f"Unknown language; choose one of: {', '.join(LANGUAGES)}."]})
    available = images()
    image = body.get("image")
    image = available[0] if image is None else image
    if image not in available:
        raise ValidationError({"image": [f"Not an image sessions may use; available: {', '.join(available)}."]})
    fields = {
        "language": language,
        "image": image,
        "memory_mb": _number(
            body,
            "memory_mb",
            settings.SESSION_DEFAULT_MEMORY_MB,
            MINIMA.memory_mb,
            settings.SANDBOX_MAX_MEMORY_MB,
            integer=True,
        ),
        "cpus": _number(body, "cpus", settings.SESSION_DEFAULT_CPUS, MINIMA.cpus, settings.SANDBOX_MAX_CPUS),
        "idle_timeout_s": _number(
            body,
            "idle_timeout_s",
            settings.SESSION_IDLE_TIMEOUT_S,
            1,
            settings.SESSION_MAX_IDLE_TIMEOUT_S,
            integer=True,
        ),
        "max_lifetime_s": _number(
            body,
            "max_lifetime_s",
            settings.SESSION_MAX_LIFETIME_S,
            1,
            settings.SESSION_MAX_MAX_LIFETIME_S,
            integer=True,
        ),
        "metadata": {} if body.get("metadata") is None else body["metadata"],
    }
    if not isinstance(fields["metadata"], dict):
        raise ValidationError({"metadata": ["Must be a JSON object."]})
    if len(json.dumps(fields["metadata"])) > MAX_METADATA_BYTES:
        raise ValidationError({"metadata": [f"Must be at most {MAX_METADATA_BYTES} bytes of JSON."]})
    try:
        session_limits(fields["memory_mb"], fields["cpus"])
    except ValueError as exc:
        raise ValidationError({"non_field_errors": [str(exc)]})
    return fields


def exec_fields(body) -> dict:
    """An exec request as the host takes it: ``cmd``, ``stdin`` (bytes or None), ``env``, ``cwd``
    (absolute), ``timeout_s``, ``user``. Raises ``SessionError`` 413 for input over the file limit."""
    if not isinstance(body, dict):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    _unknown(body, EXEC_FIELDS)
    cmd = body.get("cmd")
    if not isinstance(cmd, list) or not cmd or not all(isinstance(arg, str) for arg in cmd):
        raise ValidationError({"cmd": ["Must be a non-empty list of strings (an argv; no shell is involved)."]})
    if any("\0" in arg for arg in cmd):
        raise ValidationError({"cmd": ["Arguments must not contain NUL characters."]})
    if not cmd[0]:
        raise ValidationError({"cmd": ["The program (the first argument) must not be empty."]})
    if len(cmd) > MAX_ARGS or sum(len(arg.encode("utf-8", "surrogatepass")) for arg in cmd) > MAX_ARGV_BYTES:
        raise ValidationError({"cmd": [f"At most {MAX_ARGS} arguments and {MAX_ARGV_BYTES} bytes."]})
    stdin = _stdin(body)
    env = {} if body.get("env") is None else body["env"]
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise ValidationError({"env": [f"Must be an object of at most {MAX_ENV} names to string values."]})
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValidationError({"env": [f"{name[:40]!r} is not a variable name (letters, digits, '_')."]})
        _text(value, f"env.{name}", most=MAX_ENV_BYTES)
    try:
        cwd = resolve_path("." if body.get("cwd") is None else body["cwd"], what="cwd")
    except SessionError as exc:
        raise ValidationError({"cwd": [exc.detail]})
    timeout_s = _number(body, "timeout_s", settings.SESSION_EXEC_TIMEOUT_S, 0.001, settings.SESSION_EXEC_MAX_TIMEOUT_S)
    user = body.get("user")
    user = "" if user is None else _text(user, "user", most=64)
    return {"cmd": cmd, "stdin": stdin, "env": env, "cwd": cwd, "timeout_s": timeout_s, "user": user}


def _stdin(body: dict) -> bytes | None:
    text, encoded = body.get("input"), body.get("input_base64")
    if text is not None and encoded is not None:
        raise ValidationError({"input": ["Give input or input_base64, not both."]})
    if text is not None:
        if not isinstance(text, str):
            raise ValidationError({"input": ["Must be a string (use input_base64 for bytes)."]})
        data = text.encode("utf-8", "surrogatepass")
    elif encoded is not None:
        if not isinstance(encoded, str):
            raise ValidationError({"input_base64": ["Must be a base64 string."]})
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError({"input_base64": ["Not valid base64."]})
    else:
        return None
    if len(data) > settings.SESSION_FILE_MAX_BYTES:
        raise SessionError(413, f"the input is larger than {settings.SESSION_FILE_MAX_BYTES} bytes", "too_large")
    return data
