"""`python -m services.links keeper`: keeps the links between the services' databases
(a database per service only). As pgcourier's keep-links, in each database: deletes
outbox rows the receivers confirmed and restarts a subscription left without an apply
worker; with SHOP_LINK_MODE=relay, also carries every link's rows (pgcourier's relay).

Runs as the migrating role of every database (SHOP_DATABASE_URL_<SERVICE>), as the
migrations do: pruning and restarting subscriptions are the owner's to do.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from pgcourier import logs
from pgcourier.errors import PgCourierError
from pgcourier.keeper import LinkKeeper
from pgcourier.relay import Relay

from ..shared.settings import SERVICES
from ..shared.topology_db import link_pairs


async def keep(urls: dict[str, str], *, relay: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [LinkKeeper(list(dict.fromkeys(urls.values()))).run(stop)]
    if relay:
        for sender, consumer in link_pairs():
            tasks.append(Relay(urls[sender], urls[consumer], poll_interval=0.5).run(stop))
    logging.getLogger("links").info(
        "keeping %d databases%s", len(set(urls.values())), " and relaying" if relay else ""
    )
    await asyncio.gather(*tasks)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m services.links")
    parser.add_argument("role", choices=["keeper"])
    parser.parse_args()
    instance = os.environ.get("SHOP_INSTANCE") or "links-keeper"
    logs.configure(instance=instance)
    missing = [s for s in SERVICES if not os.environ.get(f"SHOP_DATABASE_URL_{s.upper()}")]
    if missing:
        print(
            "links: error: SHOP_DATABASE_URL_<SERVICE> is not set for " + ", ".join(missing),
            file=sys.stderr,
        )
        return 1
    urls = {s: os.environ[f"SHOP_DATABASE_URL_{s.upper()}"] for s in SERVICES}
    try:
        asyncio.run(keep(urls, relay=os.environ.get("SHOP_LINK_MODE") == "relay"))
    except PgCourierError as exc:
        print(f"links: error: {exc}", file=sys.stderr)
        return 1
    return 0


raise SystemExit(main())
