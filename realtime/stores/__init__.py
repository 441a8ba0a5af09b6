"""Where channels keep state beyond one publication: history (and its durable database
copy) and presence, each in memory for one process or in Redis for many.

Internal: the broker builds the stores that go with its layer; nothing here is public API.
"""
