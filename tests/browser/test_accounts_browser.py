"""In a real browser: sign up, sign out, sign in, create a token, use it from a script, revoke it."""

import re

import pytest
import requests
from django.core import mail

from apps.accounts.tests.conftest import forget_sign_in_throttles
from tests.browser import chromium

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    forget_sign_in_throttles()
    with sync_playwright() as p:
        browser = chromium.launch(p)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.csp_violations = []
        page.on(
            "console",
            lambda msg: page.csp_violations.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
        yield page
        context.close()
        browser.close()


def me(live_server, key):
    return requests.get(f"{live_server.url}/api/v1/me/", headers={"Authorization": f"Token {key}"}, timeout=10)


def test_sign_up_sign_in_create_use_and_revoke_a_token(live_server, page, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "optional"

    # Sign up.
    page.goto(f"{live_server.url}/accounts/signup/")
    page.fill("input[name=username]", "frances")
    page.fill("input[name=email]", "frances@example.com")
    page.fill("input[name=password1]", "a-long-Passphrase-42")
    page.fill("input[name=password2]", "a-long-Passphrase-42")
    page.click("form.stack-form button[type=submit]")
    page.wait_for_load_state()
    # Sign-up answers the same whether or not the address is registered: confirm by email first.
    assert "/accounts/confirm-email/" in page.url
    link = re.search(r"https?://\S+/accounts/confirm-email/[^/\s]+/", mail.outbox[-1].body)[0]
    page.goto(link.replace("http://testserver", live_server.url))
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_load_state()
    assert page.locator("header").get_by_text("frances").is_visible()

    # Sign out (a POST from the header), then sign in again.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", "frances")
    page.fill("input[name=password]", "a-long-Passphrase-42")
    page.click("form.stack-form button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("header").get_by_text("frances").is_visible()

    # Create a token: its key is shown once.
    page.goto(f"{live_server.url}/account/tokens/")
    page.get_by_label("Name").fill("laptop CLI")
    page.get_by_role("button", name="Create token").click()
    page.wait_for_selector("#token-key")
    key = page.input_value("#token-key")
    assert key.startswith("cru_")

    # Use it from a script.
    response = me(live_server, key)
    assert response.status_code == 200
    assert response.json()["username"] == "frances"
    assert response.json()["auth"] == "token"

    # The list shows it (prefix only) with its last use; the key is not on the page any more.
    page.get_by_role("link", name="Done, back to my tokens").click()
    page.wait_for_load_state()
    assert key not in page.content()
    row = page.locator("tbody tr", has_text="laptop CLI")
    assert "active" in row.inner_text()

    # Revoke it, after confirming.
    row.get_by_role("link", name="Revoke").click()
    page.get_by_role("button", name="Revoke token").click()
    page.wait_for_load_state()
    assert "revoked" in page.locator("tbody tr", has_text="laptop CLI").inner_text()

    # Refused at once.
    assert me(live_server, key).status_code == 401

    assert page.csp_violations == []


def test_the_layout_works_on_a_phone(live_server, page):
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(f"{live_server.url}/accounts/login/")
    # Nothing wider than the screen, and the form is usable with the keyboard alone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
    assert page.csp_violations == []
