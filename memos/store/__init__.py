"""Durable state: SQL rows (:mod:`.models`), queries (:mod:`.sql`), payload blobs (:mod:`.blobs`)."""
