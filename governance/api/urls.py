from django.urls import path

from governance.api import views
from governance.api.quota import VirtualKeyQuotaView

urlpatterns = [
    path("virtual-keys", views.VirtualKeyListView.as_view()),
    path("virtual-keys/quota", VirtualKeyQuotaView.as_view()),
    path("virtual-keys/<str:vk_id>/rotate", views.VirtualKeyRotateView.as_view()),
    path("virtual-keys/<str:vk_id>", views.VirtualKeyDetailView.as_view()),
    path("teams", views.TeamListView.as_view()),
    path("teams/<str:team_id>", views.TeamDetailView.as_view()),
    path("customers", views.CustomerListView.as_view()),
    path("customers/<str:customer_id>", views.CustomerDetailView.as_view()),
    path("budgets", views.BudgetListView.as_view()),
    path("rate-limits", views.RateLimitListView.as_view()),
    path("model-configs", views.ModelConfigListView.as_view()),
    path("model-configs/<str:mc_id>", views.ModelConfigDetailView.as_view()),
    path("providers", views.ProviderGovernanceListView.as_view()),
    path("providers/<str:provider_name>", views.ProviderGovernanceDetailView.as_view()),
]
