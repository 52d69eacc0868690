"""Personal API token pages (/api-tokens/): list and create on one page, the key shown once, revoke after confirming.
Also the sign-in throttle in front of the password sign-in pages (allauth's and the admin's)."""

from __future__ import annotations

import functools

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponsePermanentRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from apps.accounts import services, throttle
from apps.accounts.forms import TokenForm
from apps.accounts.models import ApiToken


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def tokens(request):
    """GET: the user's tokens and a form. POST: create one and show its key on the response page, once."""
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            token, key = services.create_token(
                request.user, form.cleaned_data["name"], expires_at=form.expires_at(), request=request
            )
        except services.TooManyTokens as exc:
            form.add_error(None, str(exc))
        else:
            # Rendered straight from the POST (no redirect), so the clear key is never stored anywhere,
            # not even in the session; never_cache keeps it out of the browser cache.
            return render(request, "accounts/token_created.html", {"token": token, "key": key})
    status = 400 if form.errors else 200
    token_list = ApiToken.objects.filter(user=request.user).order_by("revoked_at", "-created_at")
    return render(request, "accounts/tokens.html", {"form": form, "tokens": token_list}, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def revoke(request, pk: int):
    """GET: ask to confirm. POST: revoke now. Someone else's token is a 404, never a 403."""
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if request.method == "POST":
        if services.revoke_token(token, actor=request.user, request=request):
            messages.success(request, f"Token “{token.name}” revoked. It no longer works.")
        else:
            messages.info(request, f"Token “{token.name}” was already revoked.")
        return redirect("accounts:tokens")
    return render(request, "accounts/token_revoke.html", {"token": token})


TOKENS_PATH = "/api-tokens/"


def moved_to_api_tokens(request, rest: str = ""):
    """301 from /account/tokens/… (one letter from allauth's /accounts/, easy to confuse) to /api-tokens/…,
    so bookmarks and links printed by older clients keep working."""
    query = request.META.get("QUERY_STRING", "")
    return HttpResponsePermanentRedirect(TOKENS_PATH + rest + (f"?{query}" if query else ""))


def throttled_sign_in(view, login_field: str):
    """Wrap a password sign-in view: a POST that ``throttle.check`` refuses gets the 429 page with
    ``Retry-After`` and a message saying what to do, before any password is checked; a browser that
    signs in gets the throttle's device cookie for the account."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.method != "POST":
            return view(request, *args, **kwargs)
        login = request.POST.get(login_field) or None
        blocked = throttle.check(throttle.client_address(request), login, throttle.device_of(request))
        if blocked is not None:
            return sign_in_refused(request, blocked)
        response = view(request, *args, **kwargs)
        if request.user.is_authenticated:
            throttle.remember_device(response, request.user)
        return response

    return wrapped


def sign_in_refused(request, blocked: throttle.Blocked):
    response = render(request, "429.html", {"message": blocked.message, "sign_in": True}, status=429)
    response["Retry-After"] = str(blocked.retry_after)
    return response
