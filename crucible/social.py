"""Third-party sign-in (GitHub, Google, any OpenID Connect server), switched on purely by environment.

A provider is enabled when its client id and secret are both set; only enabled providers are added to
``INSTALLED_APPS`` and ``SOCIALACCOUNT_PROVIDERS``, so the sign-in page shows exactly those. The settings
call it, so it reads the environment only (``crucible.env``) and imports no app and no model.

=====================  =================================================================
GITHUB_CLIENT_ID        GitHub OAuth app (with GITHUB_CLIENT_SECRET)
GOOGLE_CLIENT_ID        Google OAuth client (with GOOGLE_CLIENT_SECRET)
OIDC_CLIENT_ID          generic OpenID Connect client (with OIDC_CLIENT_SECRET and OIDC_SERVER_URL,
                        the issuer URL whose ``/.well-known/openid-configuration`` is read;
                        OIDC_PROVIDER_NAME is the button label, default "Single sign-on")
=====================  =================================================================
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

from crucible.env import envstr

OIDC_PROVIDER_ID = "oidc"


def _pair(prefix: str, environ: Mapping[str, str] | None) -> tuple[str, str] | None:
    client_id = (envstr(f"{prefix}_CLIENT_ID", "", environ) or "").strip()
    secret = (envstr(f"{prefix}_CLIENT_SECRET", "", environ) or "").strip()
    if not client_id and not secret:
        return None
    if not client_id or not secret:
        raise ImproperlyConfigured(f"Set both {prefix}_CLIENT_ID and {prefix}_CLIENT_SECRET, or neither.")
    return client_id, secret


def _needs_jwt(provider: str) -> None:
    # Google and OpenID Connect verify ID tokens with PyJWT; fail at start-up rather than at the first sign-in.
    if importlib.util.find_spec("jwt") is None:
        raise ImproperlyConfigured(f"The {provider} sign-in provider needs PyJWT[crypto]; install it first.")


def social_providers(environ: Mapping[str, str] | None = None) -> tuple[list[str], dict]:
    """Return (apps to add to INSTALLED_APPS, SOCIALACCOUNT_PROVIDERS) for the providers configured."""
    apps: list[str] = []
    providers: dict = {}
    github = _pair("GITHUB", environ)
    if github:
        apps.append("allauth.socialaccount.providers.github")
        providers["github"] = {
            "APPS": [{"client_id": github[0], "secret": github[1]}],
            "SCOPE": ["read:user", "user:email"],
        }
    google = _pair("GOOGLE", environ)
    if google:
        _needs_jwt("Google")
        apps.append("allauth.socialaccount.providers.google")
        providers["google"] = {
            "APPS": [{"client_id": google[0], "secret": google[1]}],
            "SCOPE": ["profile", "email"],
            "AUTH_PARAMS": {"access_type": "online"},
        }
    oidc = _pair("OIDC", environ)
    if oidc:
        server_url = (envstr("OIDC_SERVER_URL", "", environ) or "").strip()
        if not server_url.startswith(("https://", "http://")):
            raise ImproperlyConfigured("OIDC_SERVER_URL (the issuer URL, https://…) is required with OIDC_CLIENT_ID.")
        _needs_jwt("OpenID Connect")
        apps.append("allauth.socialaccount.providers.openid_connect")
        providers["openid_connect"] = {
            "APPS": [
                {
                    "provider_id": OIDC_PROVIDER_ID,
                    "name": envstr("OIDC_PROVIDER_NAME", "Single sign-on", environ),
                    "client_id": oidc[0],
                    "secret": oidc[1],
                    "settings": {"server_url": server_url},
                }
            ]
        }
    return apps, providers
