"""The rules of a click on a result's button (Re-roll, Vary, Upscale, Edit, Delete; bot/jobs/actions.py).

A click that renders is a new job of whoever clicked: their quota, their access rules, the price check, as if
they had typed it. A button works only inside the tenant its job was made in (elsewhere it reads as expired).
Delete removes a posted image: its requester or an admin may; an admin's Delete skips the access rules (an
admin cleans up even where they may not render). Core.act applies these; the refusals' words are texts.py's.
"""

from __future__ import annotations

from bot.model.request import Requester


def access_applies(*, deleting: bool, admin: bool) -> bool:
    """The place and person rules apply to this click (all but an admin's Delete)."""
    return not (deleting and admin)


def same_tenant(owner: Requester, who: Requester) -> bool:
    """The click comes from the tenant (platform and workspace) the job was made in."""
    return (owner.platform, owner.workspace) == (who.platform, who.workspace)


def may_delete(owner: Requester, who: Requester, *, admin: bool) -> bool:
    """The job's requester, or an admin, may delete its image."""
    return owner.user == who.user or admin
