from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from experiments.views import core

urlpatterns = [
    path("", core.home, name="home"),
    path("healthz", core.healthz, name="healthz"),
    path("readyz", core.readyz, name="readyz"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("experiments.urls")),
]

# Our own error pages (plain words, a way back, the request id); see experiments.views.errors.
handler400 = "experiments.views.errors.bad_request"
handler403 = "experiments.views.errors.permission_denied"
handler404 = "experiments.views.errors.page_not_found"
handler500 = "experiments.views.errors.server_error"
