"""Bayeux (CometD, Faye) on realtime's channels, keys and tokens: ``docs/bayeux.md``.

``protocol`` parses and builds Bayeux messages (pure, no Django), ``sessions`` keeps the
Bayeux sessions of a process and what each one does, ``services`` calls the
server-side handlers of ``/service/**`` channels, and ``http`` and ``consumer`` carry
it all over HTTP (long-polling, callback-polling) and WebSocket.
"""
