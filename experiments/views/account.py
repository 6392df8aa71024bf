"""A person's own page for API tokens: make one (shown once), see when each was last used,
revoke one. A token acts as its owner with the owner's roles as they are at each request."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from experiments.forms import ApiTokenForm, NotificationChoicesForm
from experiments.selectors import owed as owed_selectors
from experiments.selectors import tokens as token_selectors
from experiments.services import digest as digest_services
from experiments.services import tokens as token_services

TEMPLATE = "experiments/account_tokens.html"
MSG_REVOKED = "Revoked “{name}”: it no longer works."


def _page(request: HttpRequest, form: ApiTokenForm, *, made: token_services.MadeToken | None = None) -> HttpResponse:
    context = {
        "form": form,
        "tokens": token_selectors.api_token_list_for_user(user=request.user),
        "made": made,
        "max_days": token_services.MAX_DAYS,
    }
    # A page that shows a token once must never be kept by a cache or the browser's history.
    response = render(request, TEMPLATE, context)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def account_tokens(request: HttpRequest) -> HttpResponse:
    """The person's tokens, and the form to make one."""
    return _page(request, ApiTokenForm())


@sensitive_variables("made")
@require_POST
def account_token_create(request: HttpRequest) -> HttpResponse:
    """Make a token and show it this once (it is never stored or shown again)."""
    form = ApiTokenForm(request.POST)
    if not form.is_valid():
        return _page(request, form)
    made = token_services.api_token_create(
        user=request.user,
        name=form.cleaned_data["name"],
        scope=form.cleaned_data["scope"],
        days=form.cleaned_data["days"],
    )
    return _page(request, ApiTokenForm(), made=made)


@require_POST
def account_token_revoke(request: HttpRequest, token_pk: int) -> HttpResponse:
    """Revoke one of one's own tokens."""
    token = token_selectors.api_token_for_user(user=request.user, pk=token_pk)
    if token is None:
        raise Http404("You have no such token.")
    try:
        token_services.api_token_revoke(token=token, by=request.user)
    except ValueError as exc:
        messages.info(request, str(exc))
    else:
        messages.success(request, MSG_REVOKED.format(name=token.name))
    return redirect("experiments:account-tokens")


NOTIFICATIONS_TEMPLATE = "experiments/account_notifications.html"
MSG_DIGEST_ON = "You will get the weekly digest by email."
MSG_DIGEST_OFF = "You will no longer get the weekly digest."
MSG_DIGEST_SAME = "Nothing changed."


@require_http_methods(["GET", "POST"])
def account_notifications(request: HttpRequest) -> HttpResponse:
    """One's own choices about what reaches one: the weekly digest of decisions owed."""
    if request.method == "POST":
        form = NotificationChoicesForm(request.POST)
        if form.is_valid():
            wanted = form.cleaned_data["weekly_digest"]
            changed = digest_services.digest_preference_set(user=request.user, weekly_digest=wanted)
            messages.success(request, (MSG_DIGEST_ON if wanted else MSG_DIGEST_OFF) if changed else MSG_DIGEST_SAME)
            return redirect("experiments:account-notifications")
    else:
        form = NotificationChoicesForm(initial={"weekly_digest": owed_selectors.digest_wanted(user=request.user)})
    context = {
        "form": form,
        "digests": owed_selectors.digest_emails_for_user(user=request.user),
        "has_email": bool(request.user.email),
    }
    return render(request, NOTIFICATIONS_TEMPLATE, context)
