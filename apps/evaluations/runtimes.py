"""The runtimes Crucible ships with. Operators add more in the admin (they are rows, not code)."""

DEFAULT_RUNTIMES = [
    {"name": "python", "command": ["python3", "-u", "{file}"], "file_name": "main.py"},
    {"name": "bash", "command": ["bash", "{file}"], "file_name": "main.sh"},
]


def ensure_default_runtimes(runtime_model) -> None:
    """Create the default runtimes that are missing; never touches ones an operator changed."""
    for runtime in DEFAULT_RUNTIMES:
        runtime_model.objects.get_or_create(name=runtime["name"], defaults=runtime)
