"""Durable state: SQL rows (:mod:`.models`) and the engine and transactions (:mod:`.sql`)."""
