from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from experiments.signin import views as signin
from experiments.views import core, metrics

urlpatterns = [
    path("", core.home, name="home"),
    path("healthz", core.healthz, name="healthz"),
    path("readyz", core.readyz, name="readyz"),
    path("readyz/worker", core.readyz_worker, name="readyz-worker"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("accounts/login/", signin.password_login, name="login"),
    path("accounts/signin/", signin.signin, name="signin"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/sso/start/", login_not_required(signin.SSOStartView.as_view()), name="oidc_authentication_init"),
    path(
        "accounts/sso/callback/",
        login_not_required(signin.SSOCallbackView.as_view()),
        name="oidc_authentication_callback",
    ),
    path("admin/login/", signin.admin_login),
    path("admin/", admin.site.urls),
    path("", include("experiments.urls")),
]

# Our own error pages (plain words, a way back, the request id); see experiments.views.errors.
handler400 = "experiments.views.errors.bad_request"
handler403 = "experiments.views.errors.permission_denied"
handler404 = "experiments.views.errors.page_not_found"
handler500 = "experiments.views.errors.server_error"
