from django.urls import re_path

from governance.api import usage_views

# Mounted at /api/usage/; trailing slashes are optional, as on the other /api/ paths.
urlpatterns = [
    re_path(r"^records/?$", usage_views.UsageRecordListView.as_view()),
    re_path(r"^summary/?$", usage_views.UsageSummaryView.as_view()),
    re_path(r"^daily/?$", usage_views.DailyUsageView.as_view()),
]
