from django.urls import path

from routing.api import views

urlpatterns = [
    path("routing-rules", views.RoutingRuleListView.as_view()),
    path("routing-rules/<str:rule_id>", views.RoutingRuleDetailView.as_view()),
]
