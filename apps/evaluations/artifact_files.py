"""Serving a run's artifacts to people: what kind of file each one is (sniffed from its bytes, never
from its name), a bounded text preview, and all of them as one zip streamed file by file.

Artifacts are written by the sandboxed program: their names and bytes are hostile. An image is
served only when its first bytes are one of a few raster formats (no SVG: it can hold script); a
preview is text only when it decodes as UTF-8 without NUL; names inside the zip are cleaned so no
archive tool can be led outside the folder it extracts to.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from django.db.models import BinaryField
from django.db.models.functions import Substr

from apps.evaluations.models import Artifact

PREVIEW_TEXT_BYTES = 64 * 1024  # the most of a text artifact the preview returns
SNIFF_BYTES = 512  # what is read to tell the kind of a file

# Magic numbers of the image types the image endpoint serves, and their content types.
IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
SAFE_NAME_PART = re.compile(r"[^A-Za-z0-9._ +=,@()\[\]{}-]")


class ArtifactKind(StrEnum):
    IMAGE = "image"
    TEXT = "text"
    BINARY = "binary"


def image_type(head: bytes) -> str | None:
    """The content type of an allow-listed image whose bytes start with ``head`` (None for anything else)."""
    for signature, content_type in IMAGE_SIGNATURES:
        if head.startswith(signature):
            return content_type
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def looks_like_text(head: bytes) -> bool:
    """UTF-8 without NUL (a multi-byte character cut at the end of ``head`` does not count against it)."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def kind_of(head: bytes) -> ArtifactKind:
    """Image, text or binary, from the first bytes of a file."""
    if image_type(head):
        return ArtifactKind.IMAGE
    return ArtifactKind.TEXT if looks_like_text(head) else ArtifactKind.BINARY


@dataclass(frozen=True)
class ArtifactEntry:
    """An artifact as the detail page lists it: no data, its kind sniffed from its first bytes."""

    name: str
    size: int
    sha256: str
    kind: ArtifactKind


def entries(artifacts) -> list[ArtifactEntry]:
    """The page's list of ``artifacts`` (a queryset), reading only the first ``SNIFF_BYTES`` of each."""
    rows = (
        artifacts.annotate(head=Substr("data", 1, SNIFF_BYTES, output_field=BinaryField()))
        .order_by("name")
        .values_list("name", "size", "sha256", "head")
    )
    return [ArtifactEntry(name, size, sha256, kind_of(bytes(head or b""))) for name, size, sha256, head in rows]


@dataclass(frozen=True)
class TextPreview:
    text: str
    truncated: bool


def text_preview(artifact: Artifact) -> TextPreview | None:
    """The first ``PREVIEW_TEXT_BYTES`` as text (cut at a character boundary), or None for a binary file."""
    data = bytes(artifact.data[: PREVIEW_TEXT_BYTES + 4])
    if not looks_like_text(data[:PREVIEW_TEXT_BYTES]):
        return None
    head = data[:PREVIEW_TEXT_BYTES]
    return TextPreview(head.decode("utf-8", errors="ignore"), truncated=artifact.size > PREVIEW_TEXT_BYTES)


def safe_download_name(name: str) -> str:
    """The last part of ``name`` with only harmless characters (for Content-Disposition)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name.rsplit("/", 1)[-1]) or "artifact"


def zip_member_name(name: str, taken: set[str]) -> str:
    """A relative path safe to extract anywhere: no absolute path, drive, ``..``, backslash or control
    character, each part at most 100 characters, and unique within the archive (``taken``)."""
    parts = []
    for part in re.split(r"[/\\]+", name):
        part = SAFE_NAME_PART.sub("_", part).strip(" .")[:100]
        if part:
            parts.append(part)
    candidate = "/".join(parts) or "artifact"
    unique, n = candidate, 1
    while unique.lower() in taken:
        n += 1
        stem, dot, ext = candidate.rpartition(".")
        unique = f"{stem} ({n}).{ext}" if dot and stem else f"{candidate} ({n})"
    taken.add(unique.lower())
    return unique


class _Sink:
    """A write-only file for ``zipfile`` whose bytes are taken away as they are written."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.buffer = bytes(self.buffer), bytearray()
        return data


def stream_zip(artifacts: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """A zip of ``(name, data)`` pairs, yielded file by file (only one file's bytes in memory at a time)."""
    sink = _Sink()
    taken: set[str] = set()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for name, data in artifacts:
            info = zipfile.ZipInfo(zip_member_name(name, taken), date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16  # a plain file, whatever mode it had
            archive.writestr(info, data)
            yield sink.take()
    yield sink.take()


def artifact_pairs(artifacts) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of each artifact in a queryset, read one row at a time."""
    for pk, name in artifacts.order_by("name").values_list("pk", "name"):
        data = artifacts.filter(pk=pk).values_list("data", flat=True).first()
        if data is not None:
            yield name, bytes(data)
