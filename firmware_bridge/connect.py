"""Open a tester link by URL, whichever transport the URL names.

``riffa://ID/CHANNEL`` opens the stock SoftMC transport (:class:`firmware_bridge.riffa.RiffaLink`);
anything else is a framed link over a pySerial transport (:class:`firmware_bridge.link.Link`),
with the ``spy+`` prefix as :meth:`Link.open` takes it.
"""

from __future__ import annotations

from typing import Callable, TextIO, Union

from firmware_bridge.link import Link
from firmware_bridge.riffa import RiffaLink

__all__ = ["open_link", "LINK_SCHEMES", "AnyLink"]

#: URL schemes this package opens itself, besides pySerial's.
LINK_SCHEMES = ("riffa", "spy+riffa")

AnyLink = Union[Link, RiffaLink]


def open_link(
    url: str,
    *,
    timeout_s: float = 5.0,
    retries: int = 3,
    spy: Callable[[str], None] | TextIO | None = None,
) -> AnyLink:
    """Open the link ``url`` names: a RIFFA board, or a framed link over pySerial.

    Raises
    ------
    firmware_bridge.link.LinkError
        With a one-line message (bad URL, missing library or board, port that does not open).
    """
    if isinstance(url, str) and url.lower().startswith(("riffa://", "spy+riffa://")):
        if url.lower().startswith("spy+"):
            import sys

            url, spy = url[4:], spy if spy is not None else sys.stderr
        return RiffaLink.open(url, timeout_s=timeout_s, spy=spy)
    return Link.open(url, timeout_s=timeout_s, retries=retries, spy=spy)
