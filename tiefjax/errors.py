"""The one exception type users see: a message that names the problem and the fix.

Library code raises :class:`TiefjaxError` (or a subclass) for bad input; the CLI and the
server turn it into a plain message / a JSON error instead of a traceback.
"""

from __future__ import annotations


class TiefjaxError(Exception):
    """A problem the user can act on. ``str(err)`` is shown as-is to people."""

    #: HTTP status the server answers with when this error reaches it.
    http_status: int = 400


class NotFound(TiefjaxError):
    """An id, file or artefact that does not exist (unknown image id, no index yet, ...)."""

    http_status = 404


class InvalidInput(TiefjaxError):
    """Well-formed request with invalid content (box outside the image, corrupt image, ...)."""

    http_status = 422


class Conflict(TiefjaxError):
    """An optimistic-concurrency conflict: someone else changed the record first."""

    http_status = 409
