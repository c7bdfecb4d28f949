from django.urls import path

from pricing.api import catalog, views

urlpatterns = [
    path("pricing-overrides", views.PricingOverrideListView.as_view()),
    path("pricing-overrides/<str:override_id>", views.PricingOverrideDetailView.as_view()),
]

catalog_urlpatterns = [
    path("models", catalog.CatalogModelsView.as_view()),
    path("quote", catalog.QuoteView.as_view()),
]
