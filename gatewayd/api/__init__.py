"""
The admin API: GatewayD's HTTP routes and C{api.v1.GatewayDAdminAPIService}
over gRPC (with health and reflection), a status page, and an optional bearer
token.  See C{docs/api.md}.

Embedding: L{api_services} returns the services to add to a gateway::

    for service in api_services(gateway, config.global_.api, reactor):
        service.setServiceParent(gateway)
"""

from gatewayd.api.service import api_services

__all__ = ["api_services"]
