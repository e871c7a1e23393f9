"""The memos REST API (FastAPI). Start it with ``memos serve``; build it with
:func:`api.main.create_app`."""
