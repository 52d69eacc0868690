"""The runtimes Crucible ships with, as rows. Operators add more in the admin (they are rows, not code).

Their commands and file names are the sandbox's own (``apps.sandboxing.policy.runtime_for``), so the
two cannot disagree; the image is left empty on the row, which means ``SANDBOX_IMAGE``.
"""

from apps.sandboxing.policy import runtime_for

DEFAULT_RUNTIME_NAMES = ("python", "bash")


def default_runtimes() -> list[dict]:
    return [
        {"name": name, "command": list(runtime.command), "file_name": runtime.file_name}
        for name, runtime in ((name, runtime_for(name)) for name in DEFAULT_RUNTIME_NAMES)
    ]


def ensure_default_runtimes(runtime_model) -> None:
    """Create the default runtimes that are missing; never touches ones an operator changed."""
    for runtime in default_runtimes():
        runtime_model.objects.get_or_create(name=runtime["name"], defaults=runtime)
