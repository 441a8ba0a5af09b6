"""Server-Sent Events: publications for ``EventSource``, HTMX's SSE extension and curl.

``realtime.sse.protocol`` turns native frames into SSE events (pure, no Django);
``realtime.sse.stream`` is the ASGI application that serves ``GET /realtime/sse``, whose
streams are hub subscribers like native connections and Bayeux sessions.
"""
