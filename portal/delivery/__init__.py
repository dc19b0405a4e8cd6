"""Delivering messages: channels (SMTP, SMS, WeCom), message building, tracking tokens and
the public tracking endpoints (open pixel, click redirect, unsubscribe)."""
