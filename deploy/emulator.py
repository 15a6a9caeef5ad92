"""``python -m deploy.emulator --port 5000 [--verbose]``: moto's server on 127.0.0.1 for the devstack.

moto's own command prints an access line for every call the services make (CloudWatch shipping
alone makes one a second); here they are shown only with ``--verbose``. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from deploy.local_env import isolate

HOST = "127.0.0.1"


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--verbose", action="store_true", help="print moto's access lines")
    args = parser.parse_args(argv)
    isolate(os.environ)
    from moto.server import ThreadedMotoServer

    # werkzeug writes its access lines through this logger, at INFO.
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)
    server = ThreadedMotoServer(ip_address=HOST, port=args.port, verbose=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"moto listening on http://{HOST}:{args.port}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
