"""USB device events: sources (udev, simulated) and dispatch to the plugins whose ids match."""

from autoweave_plugins.usb.device import USBEvent
from autoweave_plugins.usb.dispatch import USBDispatcher
from autoweave_plugins.usb.simulated import SimulatedSource

__all__ = ["SimulatedSource", "USBDispatcher", "USBEvent"]
