from django.urls import path

from pricing.api import views

urlpatterns = [
    path("pricing-overrides", views.PricingOverrideListView.as_view()),
    path("pricing-overrides/<str:override_id>", views.PricingOverrideDetailView.as_view()),
]
