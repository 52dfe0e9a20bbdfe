"""A real Dask scheduler and workers on loopback, for the Node tests (run with /usr/bin/python3).

Prints one JSON line when everything listens: {"scheduler": address, "workers": [addresses],
"pid": pid}. Exits when stdin closes (the Node test ended or died), on SIGTERM, or after
--lifetime seconds, so that no process outlives its test.

    /usr/bin/python3 dask_cluster.py --protocol tcp --workers 1 --nthreads 2
    /usr/bin/python3 dask_cluster.py --scheduler tcp://127.0.0.1:8786 --workers 1   # workers only
    /usr/bin/python3 dask_cluster.py --workers 0                                     # scheduler only
"""
import argparse
import asyncio
import json
import os
import signal
import sys
import threading


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--protocol", default="tcp", choices=["tcp", "ws"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--nthreads", type=int, default=2)
    p.add_argument("--scheduler", default=None, help="an existing scheduler: start workers only")
    p.add_argument("--compression", default="auto", help="distributed.comm.compression (auto, lz4, zlib, none)")
    p.add_argument("--lifetime", type=float, default=300.0)
    p.add_argument("--host", default="127.0.0.1", help="the loopback address to listen on")
    p.add_argument("--port", type=int, default=0, help="the scheduler's port (default: any free one)")
    args = p.parse_args()

    import dask

    dask.config.set({
        "distributed.comm.compression": None if args.compression == "none" else args.compression,
        "distributed.worker.daemon": False,
        "distributed.admin.tick.limit": "10s",
    })
    from distributed import Scheduler, Worker

    async def run():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def watch_stdin():
            try:
                sys.stdin.buffer.read()
            finally:
                loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, daemon=True).start()
        loop.call_later(args.lifetime, stop.set)

        scheduler = None
        address = args.scheduler
        if address is None:
            scheduler = Scheduler(host=args.host, port=args.port, protocol=args.protocol, dashboard=False, dashboard_address="127.0.0.1:0")
            await scheduler
            address = scheduler.address
        workers = [
            Worker(address, nthreads=args.nthreads, host=args.host, protocol=args.protocol, memory_limit=0, dashboard=False, dashboard_address="127.0.0.1:0")
            for _ in range(args.workers)
        ]
        for w in workers:
            await w
        print(json.dumps({"scheduler": address, "workers": [w.address for w in workers], "pid": os.getpid()}), flush=True)
        await stop.wait()
        # No orderly shutdown: tasks may be sleeping in worker threads, and nothing here is worth keeping.
        os._exit(0)

    try:
        asyncio.run(run())
    finally:
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
