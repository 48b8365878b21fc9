"""Result channels: how an approved result reaches the applicant. One module per channel,
each defining `CHANNEL` (a `base.Channel`); they are found here, so adding a channel is
adding its module."""

from __future__ import annotations

import importlib
import pkgutil

from services.delivery.channels.base import Channel


def _discover() -> dict[str, Channel]:
    found: dict[str, Channel] = {}
    for module in pkgutil.iter_modules(__path__):
        channel = getattr(importlib.import_module(f"{__name__}.{module.name}"), "CHANNEL", None)
        if isinstance(channel, Channel):
            found[channel.method] = channel
    return found


CHANNELS = _discover()
FALLBACK = "WINDOW"  # where a result goes when the chosen channel may not carry it


def channel(method: str) -> Channel:
    return CHANNELS[method]
