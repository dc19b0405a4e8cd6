"""Channels deliver one message to one recipient and say what happened as a `SendResult`."""

from portal.delivery.channels.base import (
    RETRY_DELAYS,
    ChannelUnavailable,
    Outcome,
    SendResult,
    retry_delay,
)

__all__ = ["RETRY_DELAYS", "ChannelUnavailable", "Outcome", "SendResult", "retry_delay"]
