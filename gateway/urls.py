"""URL map of the control plane. Inference routes (/v1, /openai, /anthropic) never reach
Django: gateway/asgi.py sends them to the data plane."""

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from pricing.api import urls as pricing_urls

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/governance/", include("governance.api.urls")),
    path("api/governance/", include("routing.api.urls")),
    path("api/governance/", include("pricing.api.urls")),
    path("api/pricing/", include(pricing_urls.catalog_urlpatterns)),
    path("api/usage/", include("governance.api.usage_urls")),
    path("api/", include("gateway.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", staff_member_required(
        SpectacularSwaggerView.as_view(url_name="api-schema")), name="api-docs"),
]

handler404 = "gateway.api.errorpages.not_found"
handler500 = "gateway.api.errorpages.server_error"
