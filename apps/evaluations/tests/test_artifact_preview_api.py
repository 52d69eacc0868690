"""The artifact preview endpoints (text, image) and the zip of all artifacts: kinds sniffed from the
bytes, hostile names made safe, and the same visibility as the artifacts themselves."""

import io
import zipfile

import pytest

from apps.audit.models import AuditEvent
from apps.evaluations import artifact_files
from apps.evaluations.models import Status
from apps.evaluations.tests.factories import add_artifact, make_evaluation
from apps.monitoring.models import Incident

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
SVG = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>"


@pytest.fixture
def evaluation(alice):
    return make_evaluation(alice, status=Status.SUCCEEDED)


def url(evaluation, kind: str, name: str = "") -> str:
    return f"/api/v1/evaluations/{evaluation.pk}/{kind}/{name}"


# --- text --------------------------------------------------------------------------------------


def test_a_text_artifact_previews_as_json_text(alice_api, evaluation):
    add_artifact(evaluation, "out/notes.txt", "héllo <b>\n".encode())
    response = alice_api.get(url(evaluation, "artifact-text", "out/notes.txt"))
    assert response.status_code == 200
    assert response.json() == {"name": "out/notes.txt", "size": 11, "text": "héllo <b>\n", "truncated": False}


def test_a_long_text_artifact_is_cut_at_the_preview_size(alice_api, evaluation):
    add_artifact(evaluation, "big.txt", "é".encode() * artifact_files.PREVIEW_TEXT_BYTES)
    body = alice_api.get(url(evaluation, "artifact-text", "big.txt")).json()
    assert body["truncated"] is True
    assert len(body["text"].encode()) == artifact_files.PREVIEW_TEXT_BYTES
    assert body["text"] == "é" * (artifact_files.PREVIEW_TEXT_BYTES // 2)


def test_a_binary_artifact_has_no_text_preview(alice_api, evaluation):
    add_artifact(evaluation, "model.bin", b"\x00\x01\xfe\xff")
    response = alice_api.get(url(evaluation, "artifact-text", "model.bin"))
    assert response.status_code == 415
    assert "not UTF-8 text" in response.json()["detail"]


# --- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "content_type"), [(PNG, "image/png"), (JPEG, "image/jpeg")])
def test_an_image_is_served_inline_with_its_sniffed_type_and_a_sandbox(alice_api, evaluation, data, content_type):
    add_artifact(evaluation, "plot.dat", data)  # the name says nothing; the bytes decide
    response = alice_api.get(url(evaluation, "artifact-image", "plot.dat"))
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert response["Content-Disposition"].startswith("inline;")
    assert response.content == data


@pytest.mark.parametrize("data", [SVG, b"<html><script>alert(1)</script>", b"GIF8"])
def test_anything_but_an_allowed_image_is_refused_whatever_its_name(alice_api, evaluation, data):
    add_artifact(evaluation, "picture.png", data)
    response = alice_api.get(url(evaluation, "artifact-image", "picture.png"))
    assert response.status_code == 415
    assert response["Content-Type"] == "application/json"


def test_the_page_lists_kinds_from_the_first_bytes(evaluation):
    add_artifact(evaluation, "a.png", PNG)
    add_artifact(evaluation, "b.png", SVG)
    add_artifact(evaluation, "c.txt", b"\x00binary")
    kinds = {entry.name: entry.kind for entry in artifact_files.entries(evaluation.artifacts.all())}
    assert kinds == {"a.png": "image", "b.png": "text", "c.txt": "binary"}


# --- zip ---------------------------------------------------------------------------------------


def test_all_artifacts_download_as_one_zip(alice_api, evaluation):
    add_artifact(evaluation, "a.txt", b"alpha")
    add_artifact(evaluation, "dir/b.bin", b"\x00\x01")
    response = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/artifacts.zip")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert (
        response["Content-Disposition"] == f'attachment; filename="evaluation-{str(evaluation.pk)[:8]}-artifacts.zip"'
    )
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert {name: archive.read(name) for name in archive.namelist()} == {"a.txt": b"alpha", "dir/b.bin": b"\x00\x01"}


def test_hostile_names_are_made_safe_to_extract(alice_api, evaluation):
    for name in (
        "../../etc/passwd",
        "/abs/path.txt",
        "dir\\..\\..\\win.txt",
        "a\x1b[31m\n.txt",
        "..",
        "A.TXT",
        "a.txt",
    ):
        add_artifact(evaluation, name, name.encode())
    response = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/artifacts.zip")
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert len(names) == 7
    assert len({name.lower() for name in names}) == 7  # unique even on a case-insensitive disk
    for name in names:
        assert not name.startswith("/") and "\\" not in name
        assert ".." not in name.split("/")
        assert all(ch.isprintable() for ch in name)


def test_no_artifacts_is_an_empty_zip(alice_api, evaluation):
    response = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/artifacts.zip")
    assert zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist() == []


# --- who may see them --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["artifact-text/a.png", "artifact-image/a.png", "artifacts.zip"])
def test_another_user_gets_404_and_an_operator_gets_them(bob_api, olivia_api, evaluation, path):
    add_artifact(evaluation, "a.png", PNG)
    assert bob_api.get(f"/api/v1/evaluations/{evaluation.pk}/{path}").status_code == 404
    assert olivia_api.get(f"/api/v1/evaluations/{evaluation.pk}/{path}").status_code in (200, 415)


@pytest.mark.parametrize("kind", ["artifact-text", "artifact-image"])
def test_an_unknown_artifact_is_a_404(alice_api, evaluation, kind):
    assert alice_api.get(url(evaluation, kind, "nope.txt")).status_code == 404


# --- quarantine (a safety incident) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name"),
    [("artifact-text", "notes.txt"), ("artifact-image", "plot.png"), ("artifacts", "notes.txt"), ("artifacts.zip", "")],
)
def test_a_quarantined_runs_artifacts_are_refused_to_its_owner_in_every_form(
    alice_api, olivia_api, evaluation, kind, name
):
    add_artifact(evaluation, "plot.png", PNG)
    add_artifact(evaluation, "notes.txt", b"kept as evidence\n")
    incident = Incident.objects.create(evaluation_id=evaluation.pk, owner=evaluation.owner)
    address = url(evaluation, kind, name).rstrip("/")

    refused = alice_api.get(address)
    assert refused.status_code == 403
    assert refused.json()["code"] == "quarantined" and refused.json()["incident"] == incident.pk
    assert olivia_api.get(address).status_code == 403  # operators say that they mean it
    assert olivia_api.get(address + "?quarantine=release-ack").status_code == 200
    assert AuditEvent.objects.filter(action="incident.quarantined_download", actor_name="olivia").count() == 1


def test_the_names_of_a_quarantined_runs_artifacts_are_still_listed(alice_api, evaluation):
    add_artifact(evaluation, "plot.png", PNG)
    Incident.objects.create(evaluation_id=evaluation.pk, owner=evaluation.owner)
    response = alice_api.get(url(evaluation, "artifacts"))  # the list's address ends in a slash
    assert response.status_code == 200
    assert [artifact["name"] for artifact in response.json()] == ["plot.png"]
