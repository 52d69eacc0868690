"""The API tokens pages: the owner creates, lists and revokes; nobody else can touch them."""

import pytest
from django.urls import reverse

from apps.accounts.models import ApiToken
from apps.accounts.services import create_token

pytestmark = pytest.mark.django_db

TOKENS = "/api-tokens/"


def test_the_url_names():
    assert reverse("accounts:tokens") == TOKENS
    assert reverse("accounts:token-revoke", args=[7]) == "/api-tokens/7/revoke/"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("/account/tokens/", "/api-tokens/"),
        ("/account/tokens/7/revoke/", "/api-tokens/7/revoke/"),
        ("/account/tokens/?page=2", "/api-tokens/?page=2"),
    ],
)
def test_the_old_token_urls_redirect_for_good(client, old, new):
    response = client.get(old)
    assert response.status_code == 301
    assert response["Location"] == new


def test_the_old_url_leads_a_signed_in_user_to_the_tokens_page(client, alice):
    client.force_login(alice)
    response = client.get("/account/tokens/", follow=True)
    assert response.redirect_chain == [("/api-tokens/", 301)]
    assert response.status_code == 200


def test_anonymous_is_sent_to_sign_in(client, alice):
    token, _ = create_token(alice, "laptop")
    for url in (TOKENS, f"/api-tokens/{token.pk}/revoke/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    response = client.post(f"/api-tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.is_active


def test_the_owner_creates_a_token_and_sees_the_key_once(client, alice):
    client.force_login(alice)
    response = client.post(TOKENS, {"name": "  nightly   benchmark "})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=alice)
    assert token.name == "nightly benchmark"
    key = response.context["key"]
    assert key.startswith(token.prefix)
    assert key in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    # Never again: the list shows only the prefix.
    listing = client.get(TOKENS).content.decode()
    assert token.prefix in listing
    assert key not in listing


def test_the_owner_lists_only_their_tokens(client, alice, bob):
    create_token(alice, "alice laptop")
    create_token(bob, "bob laptop")
    client.force_login(alice)
    page = client.get(TOKENS).content.decode()
    assert "alice laptop" in page
    assert "bob laptop" not in page
    assert "never" in page  # last used
    assert "active" in page


def test_a_blank_name_is_a_400_with_the_error(client, alice):
    client.force_login(alice)
    response = client.post(TOKENS, {"name": "   "})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()
    response = client.post(TOKENS, {"name": "x" * 101})
    assert response.status_code == 400


def test_revoking_asks_first_then_revokes(client, alice):
    token, _ = create_token(alice, "laptop")
    client.force_login(alice)
    confirm = client.get(f"/api-tokens/{token.pk}/revoke/")
    assert confirm.status_code == 200
    assert "Revoke token" in confirm.content.decode()
    token.refresh_from_db()
    assert token.is_active
    response = client.post(f"/api-tokens/{token.pk}/revoke/", follow=True)
    assert response.redirect_chain[-1][0] == TOKENS
    assert "revoked" in response.content.decode()
    token.refresh_from_db()
    assert not token.is_active


def test_another_user_cannot_revoke_someone_elses_token(client, alice, bob):
    token, _ = create_token(alice, "laptop")
    client.force_login(bob)
    assert client.get(f"/api-tokens/{token.pk}/revoke/").status_code == 404
    assert client.post(f"/api-tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.is_active


def test_an_operator_cannot_revoke_through_the_page_either(client, alice, olivia):
    # Operators revoke from the admin (audited there); the personal page is personal.
    token, _ = create_token(alice, "laptop")
    client.force_login(olivia)
    assert client.post(f"/api-tokens/{token.pk}/revoke/").status_code == 404


def test_revoke_needs_csrf(alice):
    from django.test import Client

    token, _ = create_token(alice, "laptop")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(f"/api-tokens/{token.pk}/revoke/")
    assert response.status_code == 403
    token.refresh_from_db()
    assert token.is_active


def test_other_methods_are_refused(client, alice):
    client.force_login(alice)
    assert client.delete(TOKENS).status_code == 405
