"""Integrations with particular ASGI servers, each importing its server.

Nothing else in realtime imports these modules, so realtime runs under any ASGI server
without them being installed; a deployment names one on the server's command line
(``realtime.servers.uvicorn``: docs/deployment.md#hardening).
"""
