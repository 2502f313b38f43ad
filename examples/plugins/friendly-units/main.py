"""Sizes and durations in words. `humanize` comes from this plugin's own environment, which
`autoweave-plugins prepare` (or `run`, in the background) builds from its `requirements`:
it needs no host grant, and no other plugin sees it."""

import humanize

import autoweave

devices = 0


def initialize():
    autoweave.log.info(
        "humanize %s ready: 1536 bytes is %s", humanize.__version__, humanize.naturalsize(1536)
    )


def describe(job):
    return {
        "size": humanize.naturalsize(job.get("bytes", 0)),
        "duration": humanize.precisedelta(job.get("seconds", 0)),
    }


def attached(device):
    global devices
    devices += 1
    autoweave.log.info(
        "device %s:%s attached: the %s this run",
        device["vendor_id"],
        device["product_id"],
        humanize.ordinal(devices),
    )
    return humanize.ordinal(devices)
