"""``/services/<id>/auto-scaling-rules[/<rule_id>]``: an endpoint's autoscaling rules.
Thin: ids from the path, the JSON body to ``serving.services.autoscale`` (which validates
every field: 400 ``invalid-api-params`` naming it, nothing written), the rule as JSON.

* ``GET``  the collection: ``[rule, ...]`` (oldest first); ``POST``: a new rule (201);
* ``GET``/``PATCH``/``DELETE`` one rule (``PATCH`` takes any subset of the fields; 204 on delete).

A rule: ``{id, endpoint_id, metric_source (proxy|kernel), metric_name, threshold, comparator
(lt|le|gt|ge), step_size, cooldown_seconds, min_replicas, max_replicas, window_seconds,
enabled, last_value, last_triggered_at, created_at}``; inputs also take Backend.AI's enum
spellings (``INFERENCE_FRAMEWORK``/``KERNEL``, ``LESS_THAN``, ...).  Who may: whoever may manage
the endpoint; anyone else gets 404, as for the endpoint itself."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from serving.api.views import parse_id
from serving.services import autoscale

OBJECT = OpenApiTypes.OBJECT


class AutoScalingRuleCollectionView(APIView):
    @extend_schema(responses=OBJECT, operation_id="services_auto_scaling_rules_list")
    def get(self, request, service_id):
        rules = autoscale.list_rules(request.user, parse_id(service_id))
        return Response([autoscale.rule_data(rule) for rule in rules])

    @extend_schema(request=OBJECT, responses={201: OBJECT}, operation_id="services_auto_scaling_rules_create")
    def post(self, request, service_id):
        rule = autoscale.create_rule(request.user, parse_id(service_id), request.data)
        return Response(autoscale.rule_data(rule), status=status.HTTP_201_CREATED)


class AutoScalingRuleDetailView(APIView):
    @extend_schema(responses=OBJECT, operation_id="services_auto_scaling_rules_retrieve")
    def get(self, request, service_id, rule_id):
        rule = autoscale.get_rule(request.user, parse_id(rule_id, "rule_id"), parse_id(service_id))
        return Response(autoscale.rule_data(rule))

    @extend_schema(request=OBJECT, responses=OBJECT, operation_id="services_auto_scaling_rules_modify")
    def patch(self, request, service_id, rule_id):
        rule = autoscale.modify_rule(request.user, parse_id(rule_id, "rule_id"), request.data,
                                     parse_id(service_id))
        return Response(autoscale.rule_data(rule))

    @extend_schema(responses={204: None}, operation_id="services_auto_scaling_rules_delete")
    def delete(self, request, service_id, rule_id):
        autoscale.delete_rule(request.user, parse_id(rule_id, "rule_id"), parse_id(service_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
