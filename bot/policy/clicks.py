"""The rules of a click on a result's button (Re-roll, Vary, Upscale, Edit, Delete; bot/jobs/actions.py).

A click that renders is a new job of whoever clicked: their quota, their access rules, the price check, as if
they had typed it. A button works only inside the tenant its job was made in (elsewhere it reads as expired).
A click names one of its job's posted images (`clicked_image`): one it has, posted, not deleted. Delete removes
it: its requester or an admin may; an admin's Delete skips the access rules (an admin cleans up even where they
may not render). Core.act applies these; the refusals' words are the catalogs'
(bot/locale/), named by the functions at the end of this module.
"""

from __future__ import annotations

from typing import Any

from bot.errors import UserError
from bot.i18n import Msg, msg
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


def clicked_image(
    images: tuple[dict[str, Any], ...], index: int, count: int, *, rerolling: bool
) -> dict[str, Any] | None:
    """The posted image a click acts on (image `index` of a job of `count`; None for a Re-roll, which acts on
    the request). UserError naming the job's images for a number it has not, one not posted yet, or one that
    was deleted."""
    if rerolling:
        return None
    if not 0 < index <= count:
        raise UserError(no_such_image(index, count))
    image = images[index - 1] if index <= len(images) else None
    if image is None:
        raise UserError(msg("app.image_not_ready"))
    if image.get("deleted"):
        raise UserError(already_deleted(index))
    return image


def already_deleted(index: int) -> Msg:
    return msg("texts.already_deleted", index=index)


def no_such_image(index: int, count: int) -> Msg:
    return msg("texts.no_such_image", n=count, index=index)
