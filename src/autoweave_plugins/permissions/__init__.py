"""Permission model: pure logic shared by the host and the worker (paths, URLs, USB, policy)."""

from autoweave_plugins.permissions.inbound import InboundSpec
from autoweave_plugins.permissions.paths import Access, FileMode, PathDecision, PathPolicy, PathRule
from autoweave_plugins.permissions.urls import (
    CanonicalURL,
    OutboundPolicy,
    URLDecision,
    URLPattern,
    canonicalize_url,
)
from autoweave_plugins.permissions.usb import USBFilter, normalize_usb_id

__all__ = [
    "Access",
    "CanonicalURL",
    "FileMode",
    "InboundSpec",
    "OutboundPolicy",
    "PathDecision",
    "PathPolicy",
    "PathRule",
    "URLDecision",
    "URLPattern",
    "USBFilter",
    "canonicalize_url",
    "normalize_usb_id",
]
