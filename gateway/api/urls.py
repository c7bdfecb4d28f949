from django.urls import re_path

from gateway.api import views

# Trailing slashes are optional on these paths.
urlpatterns = [
    re_path(r"^providers/?$", views.ProviderListView.as_view()),
    re_path(r"^providers/(?P<name>[^/]+)/keys/?$", views.ProviderKeyListView.as_view()),
    re_path(r"^providers/(?P<name>[^/]+)/keys/(?P<key_id>[^/]+)/?$",
            views.ProviderKeyDetailView.as_view()),
    re_path(r"^providers/(?P<name>[^/]+)/?$", views.ProviderDetailView.as_view()),
    re_path(r"^aliases/?$", views.AliasListView.as_view()),
    re_path(r"^aliases/(?P<alias_id>[^/]+)/?$", views.AliasDetailView.as_view()),
    re_path(r"^audit-events/?$", views.AuditEventListView.as_view()),
    re_path(r"^audit-events/(?P<event_id>[^/]+)/?$", views.AuditEventDetailView.as_view()),
]
