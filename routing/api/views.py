"""Routing-rule API views: ``/api/governance/routing-rules``, ``.../{rule_id}`` and the dry
run ``.../evaluate``.

Paths and shapes follow Bifrost's governance API (spec 4.7). ``from_memory`` is accepted and
ignored: every read comes from the database.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from gateway.api.listing import DEFAULT_TRIGGERS, list_response
from gateway.api.views import ManagementAPIView
from routing import actions
from routing.api import representations as shapes
from routing.api import serializers as inputs
from routing.api.filters import RoutingRuleFilter
from routing.evaluation import evaluate_request
from routing.models import RoutingScope

TAGS = ["Routing rules"]
NOT_FOUND = "Routing rule not found"
SCOPE_PARAMETERS = ("scope", "scope_id")


class RoutingRuleListView(ManagementAPIView):
    @extend_schema(
        tags=TAGS, operation_id="listRoutingRules",
        description="Rules ordered by scope, priority (ascending) and age. With `scope` or "
        "`scope_id` every matching rule is returned (no pagination); otherwise `limit`, "
        "`offset` or `search` paginate.",
        parameters=[
            OpenApiParameter("scope", str, enum=list(RoutingScope.values)),
            OpenApiParameter("scope_id", str, description="Team, customer or virtual key id."),
            OpenApiParameter("limit", int, description="Page size (default 25, max 100)."),
            OpenApiParameter("offset", int, description="Rows to skip."),
            OpenApiParameter("search", str, description="Case-insensitive name substring."),
        ],
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        queryset = self.filter(RoutingRuleFilter, request, shapes.routing_rules_queryset())
        scoped = any(params.get(name) not in (None, "") for name in SCOPE_PARAMETERS)
        return Response(list_response(
            queryset, params, "rules", shapes.many(shapes.routing_rule),
            triggers=() if scoped else DEFAULT_TRIGGERS,
        ))

    @extend_schema(tags=TAGS, operation_id="createRoutingRule",
                   request=inputs.RoutingRuleCreateInput,
                   description="Creates a rule with its targets. The CEL expression, the "
                   "targets, fallbacks and scope owner are validated before anything is "
                   "written.")
    def post(self, request: Request) -> Response:
        rule = actions.create_routing_rule(self.actor(), self.parse(inputs.RoutingRuleCreateInput))
        rule = shapes.routing_rules_queryset().get(pk=rule.pk)
        return Response({"message": "Routing rule created successfully",
                         "rule": shapes.routing_rule(rule)})


class RoutingRuleDetailView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="getRoutingRule")
    def get(self, request: Request, rule_id: str) -> Response:
        rule = self.get_or_404(shapes.routing_rules_queryset(), rule_id, NOT_FOUND)
        return Response({"rule": shapes.routing_rule(rule)})

    @extend_schema(tags=TAGS, operation_id="updateRoutingRule",
                   request=inputs.RoutingRuleUpdateInput,
                   description="Partial update: absent or null fields are kept; `targets` "
                   "replaces every target.")
    def put(self, request: Request, rule_id: str) -> Response:
        rule = self.get_or_404(shapes.routing_rules_queryset(), rule_id, NOT_FOUND)
        actions.update_routing_rule(self.actor(), rule,
                                    self.parse(inputs.RoutingRuleUpdateInput))
        rule = shapes.routing_rules_queryset().get(pk=rule.pk)
        return Response({"message": "Routing rule updated successfully",
                         "rule": shapes.routing_rule(rule)})

    @extend_schema(tags=TAGS, operation_id="deleteRoutingRule")
    def delete(self, request: Request, rule_id: str) -> Response:
        rule = self.get_or_404(shapes.routing_rules_queryset(), rule_id, NOT_FOUND)
        actions.delete_routing_rule(self.actor(), rule)
        return Response({"message": "Routing rule deleted successfully"})


class RoutingRuleEvaluateView(ManagementAPIView):
    @extend_schema(
        tags=["Governance"], operation_id="evaluateRoutingRules",
        request=inputs.RoutingEvaluateInput,
        description="Dry-runs the enabled routing rules against a described request (the "
        "admin's \"Try routing\" page does the same). Returns `decision` (null when no rule "
        "matched: default routing applies), `matched`, `message`, `steps`, the full `trace` "
        "(one entry per rule evaluated: step, scope, scope_id, rule_id, rule_name, "
        "expression, outcome, detail), the engine `log`, the `scope_chain` searched and the "
        "`engine` used. Capacity percentages apply as given at every chain step. Nothing is "
        "written or sent upstream.",
    )
    def post(self, request: Request) -> Response:
        return Response(evaluate_request(**self.parse(inputs.RoutingEvaluateInput)))
