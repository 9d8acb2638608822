"""The close's disposition: the code an agent closes a conversation with (``desk.dispositions``).

Checked before anything of the close happens (its knowledge-capture proposal included), so a
close refused for its disposition changes nothing (docs/protocol.md, "Close").
"""

from __future__ import annotations

from typing import Any

from routing.config import DeskConfig

from ..websocket import FrameRejected


def checked_disposition(desk: DeskConfig, disposition: Any) -> str | None:
    """The disposition of a close frame, or ``FrameRejected`` (``bad_disposition`` for one that
    is not a string or not in ``desk.dispositions``, ``disposition_required``)."""
    if disposition is None:
        if desk.require_disposition:
            raise FrameRejected("disposition_required", f"close needs a disposition, one of {list(desk.dispositions)}")
        return None
    known = f"; one of {list(desk.dispositions)}" if desk.dispositions else ""
    if not isinstance(disposition, str):
        raise FrameRejected("bad_disposition", f"a disposition is a string, not {disposition!r}"[:200] + known)
    if desk.dispositions and disposition not in desk.dispositions:
        raise FrameRejected("bad_disposition", f"unknown disposition {disposition!r}{known}")
    return disposition
