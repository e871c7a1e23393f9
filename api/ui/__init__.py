"""The web inspector at ``/ui`` (:mod:`api.ui.pages`): page shells rendered from
``templates/``, a script and style sheet in ``static/``, every asset local."""

from api.ui.pages import mount_static, router

__all__ = ["router", "mount_static"]
