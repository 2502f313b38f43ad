"""The command line's Redis parts: ``run --jobs/--name/--usb redis://`` and ``submit``.

Kept out of ``cli.py`` so that the CLI only wires them in: ``add_run_options`` and
``add_submit_command`` extend its parser, ``RedisServices`` is what ``run`` starts and drains.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from autoweave_plugins.errors import AutoweaveError, ConfigError
from autoweave_plugins.jobs_config import check_redis_url

if TYPE_CHECKING:
    from autoweave_plugins.jobs.consumer import JobConsumer
    from autoweave_plugins.jobs.hotplug import RedisHotplugSource
    from autoweave_plugins.manager import PluginManager
    from autoweave_plugins.settings import ManagerConfig
    from autoweave_plugins.usb.dispatch import USBDispatcher

__all__ = ["RedisServices", "add_run_options", "add_submit_command", "usb_source"]

log = logging.getLogger("autoweave_plugins.run")

LOCAL_USB = ("auto", "udev", "simulated")


def usb_source(text: str) -> str:
    """argparse type of ``--usb``: auto, udev, simulated, or a redis:// URL for aw:hotplug."""
    if text in LOCAL_USB:
        return text
    try:
        check_redis_url(text, "--usb")
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"expected auto, udev, simulated or redis://HOST:PORT/DB, got {text!r}"
        ) from None
    return text


def _redis_url(text: str) -> str:
    try:
        check_redis_url(text, "--jobs")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--jobs",
        type=_redis_url,
        metavar="URL",
        help="join the Redis job queue at redis://HOST:PORT/DB (or [jobs] url in --config)",
    )


class RedisServices:
    """What ``run`` starts when it is given Redis: the job consumer and the hotplug source."""

    def __init__(self) -> None:
        self.consumer: JobConsumer | None = None
        self.hotplug: RedisHotplugSource | None = None
        self._hotplug_task: asyncio.Task[None] | None = None

    async def start(
        self,
        args: argparse.Namespace,
        config: ManagerConfig,
        manager: PluginManager,
        dispatcher: USBDispatcher,
    ) -> None:
        jobs = config.jobs
        overrides = {k: v for k, v in (("url", args.jobs), ("name", args.name)) if v}
        if overrides:
            jobs = dataclasses.replace(jobs, **overrides)
            jobs.validate("jobs")
        if jobs.url is not None:
            from autoweave_plugins.jobs.consumer import JobConsumer  # noqa: PLC0415 - redis-py

            pool = config.worker_pool
            self.consumer = JobConsumer(
                manager, jobs, max_workers=pool.max_workers, per_worker=pool.scale_out_queue
            )
            await self.consumer.start()
        if args.usb not in LOCAL_USB:
            from autoweave_plugins.jobs.hotplug import RedisHotplugSource  # noqa: PLC0415

            self.hotplug = RedisHotplugSource(
                args.usb, consumer=jobs.consumer_name, lease=jobs.lease
            )
            self._hotplug_task = asyncio.ensure_future(self.hotplug.run(dispatcher))
            log.info("USB: reading aw:hotplug at %s", self.hotplug.link.status()["url"])
        if self.consumer is not None or self.hotplug is not None:
            from autoweave_plugins.jobs.metrics import register_jobs_metrics  # noqa: PLC0415

            register_jobs_metrics(
                manager.metrics.registry,
                self.consumer.status if self.consumer else None,
                self.hotplug.status if self.hotplug else None,
            )

    def status(self) -> dict[str, Any]:
        """For the control socket's ``status``: each Redis link and its health."""
        out: dict[str, Any] = {}
        if self.consumer is not None:
            out["jobs"] = self.consumer.status()
        if self.hotplug is not None:
            out["hotplug"] = self.hotplug.status()
        return out

    async def stop(self) -> None:
        """Drain the jobs in flight (SIGTERM), then stop the hotplug source."""
        if self.consumer is not None:
            await self.consumer.drain()
        if self._hotplug_task is not None:
            self._hotplug_task.cancel()
            await asyncio.gather(self._hotplug_task, return_exceptions=True)
        if self.hotplug is not None:
            await self.hotplug.close()


def add_submit_command(commands: Any) -> None:
    submit = commands.add_parser(
        "submit", help="put a job on a Redis queue; prints its id, or its result with --wait"
    )
    submit.add_argument("--jobs", required=True, type=_redis_url, metavar="URL")
    submit.add_argument("name", metavar="NAME", help="the plugin")
    submit.add_argument("hook", metavar="HOOK", help="the hook, e.g. onJobReceived")
    submit.add_argument(
        "args_json",
        nargs="?",
        metavar="ARGS_JSON",
        help="a JSON value passed as the hook's one argument (none if omitted)",
    )
    submit.add_argument("--wait", type=float, metavar="S", help="wait S seconds for the result")
    submit.add_argument("--timeout", type=float, metavar="S", help="the hook's own time limit")
    submit.set_defaults(handler=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    """0 with the job id or its value; 1 when the job ended in an error; 2 when not submitted."""
    if args.args_json is None:
        call_args: list[Any] = []
    else:
        try:
            call_args = [json.loads(args.args_json)]
        except ValueError as exc:
            print(f"autoweave-plugins submit: ARGS_JSON is not JSON: {exc}", file=sys.stderr)
            return 2
    return asyncio.run(_submit(args, call_args))


async def _submit(args: argparse.Namespace, call_args: list[Any]) -> int:
    from autoweave_plugins.jobs.client import JobQueue  # noqa: PLC0415 - redis-py
    from autoweave_plugins.jobs.codec import error_to_dict  # noqa: PLC0415

    async with JobQueue(args.jobs) as queue:
        try:
            job_id = await queue.submit(args.name, args.hook, *call_args, timeout=args.timeout)
        except AutoweaveError as exc:
            print(f"autoweave-plugins submit: {exc}", file=sys.stderr)
            return 2
        if args.wait is None:
            print(job_id)
            return 0
        try:
            value = await queue.result(job_id, timeout=args.wait)
        except AutoweaveError as exc:
            print(json.dumps({"job_id": job_id, "error": error_to_dict(exc)}, default=str))
            print(f"job {job_id}: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(value))
        return 0
