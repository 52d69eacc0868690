"""Find the machine's configured Debian mirror in apt's sources, at run time.

Both formats are read: one-line ``deb URI SUITE COMPONENTS`` (``*.list``) and deb822
stanzas (``*.sources``). The mirror host is never written into the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _parse_list(text: str) -> list[AptSource]:
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):  # options such as [arch=amd64 signed-by=…]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            sources.append(AptSource(words[0], (words[1],), tuple(words[2:])))
    return sources


def _parse_deb822(text: str) -> list[AptSource]:
    sources = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line.startswith((" ", "\t")):
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(uri, tuple(fields.get("suites", "").split()), tuple(fields.get("components", "").split()))
            )
    return sources


def read_sources(root: Path = Path("/etc/apt")) -> list[AptSource]:
    sources: list[AptSource] = []
    main_list = root / "sources.list"
    if main_list.is_file():
        sources += _parse_list(main_list.read_text())
    parts = root / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                sources += _parse_list(path.read_text())
            elif path.suffix == ".sources":
                sources += _parse_deb822(path.read_text())
    return sources


def debian_codename(os_release: Path = Path("/etc/os-release")) -> str:
    for line in os_release.read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError(f"{os_release} names no VERSION_CODENAME; is this Debian?")


def debian_mirror(codename: str, sources: list[AptSource]) -> str:
    """The first source that serves ``codename`` itself (not -security or -updates) with ``main``."""
    for source in sources:
        if codename in source.suites and (not source.components or "main" in source.components):
            return source.uri
    raise RuntimeError(f"apt's sources name no mirror for {codename} main; cannot build the sandbox image offline")
