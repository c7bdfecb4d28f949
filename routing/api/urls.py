from django.urls import path

from routing.api import views

urlpatterns = [
    path("routing-rules", views.RoutingRuleListView.as_view()),
    # Before the detail route, which would otherwise take "evaluate" for a rule id.
    path("routing-rules/evaluate", views.RoutingRuleEvaluateView.as_view()),
    path("routing-rules/<str:rule_id>", views.RoutingRuleDetailView.as_view()),
]
