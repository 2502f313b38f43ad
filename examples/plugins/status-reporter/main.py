"""Shows brokered HTTP both ways: an allowed fetch and a refused one."""

import autoweave


async def report(device):
    response = await autoweave.fetch("http://127.0.0.1:9464/metrics")
    series = sum(1 for line in response.text.splitlines() if line and not line.startswith("#"))
    autoweave.log.info("allowed: GET /metrics -> %d with %d series", response.status, series)
    try:
        await autoweave.fetch("https://example.org/")
    except autoweave.PermissionDenied as exc:
        autoweave.log.info("refused as expected: %s", exc)
    return {"metrics_status": response.status, "series": series}
