"""Fetch throughput over many slow loopback hosts with the default politeness settings.

Each host answers every request after `--latency` seconds (robots.txt included). The crawl engine of the stage's fetch
step (HostPool threads, crawl_host, Fetcher with robots.txt, the address guard and WARC writing) fetches
`--pages` links per host. The bound is set by politeness, not by us: a host can serve at most one page per
(latency + host delay), so `hosts / (latency + delay)` pages/s is the most any polite crawler gets.

    python benchmarks/bench_fetch.py --hosts 200 --pages 5 --latency 0.1
    python benchmarks/bench_fetch.py --hosts 10000 --pages 1 --one-server --hosts-in-flight 256

`--one-server` serves every host from one socket on 0.0.0.0 (Linux: all of 127.0.0.0/8 reaches it), each host a loopback
address of its own (127.1.0.1, 127.1.0.2, …), so the host count is not limited by ports or by server threads.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import tempfile
import time

def serve(hosts: int, latency: float, ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """One asyncio loop serving `hosts` ports on 127.0.0.1 (one host each) in a process of its own."""
    from webtext.pipeline.demo_web import ManyAddressServer

    handle = ManyAddressServer(latency=latency).handle

    async def main() -> None:
        servers = [await asyncio.start_server(handle, "127.0.0.1", 0, backlog=64) for _ in range(hosts)]
        ports.put([s.sockets[0].getsockname()[1] for s in servers])
        while not stop.is_set():
            await asyncio.sleep(0.2)

    asyncio.run(main())


def serve_one(latency: float, ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """Every loopback address on one port, from a process of its own."""
    from webtext.pipeline.demo_web import ManyAddressServer

    ManyAddressServer(latency=latency).serve_forever(stop, on_port=ports.put)


def crawl(origins: list[str], pages: int, hosts_in_flight: int, host_delay: float, workdir: str) -> tuple[float, int, int]:
    """The fetch step's engine, as FetchHosts runs it; returns (seconds, pages fetched, rejects)."""
    from webtext.crawl.fetch.config import FetchConfig
    from webtext.crawl.fetch.fetcher import Fetcher
    from webtext.crawl.fetch.host_links import crawl_host
    from webtext.crawl.fetch.politeness import HostDone, HostPool
    from webtext.crawl.fetch.warc import WarcWriter

    writer = WarcWriter(workdir, "bench")
    fetcher = Fetcher(FetchConfig(host_delay=host_delay, allowed_networks=("127.0.0.0/8",)), archive=writer.write)
    pool = HostPool(lambda host, links: crawl_host(fetcher, links), max_hosts=hosts_in_flight)
    ok = failed = 0
    started = time.perf_counter()

    def count(items):
        nonlocal ok, failed
        for item in items:
            if not isinstance(item, HostDone):
                ok, failed = ok + item[1].ok, failed + (not item[1].ok)

    for origin in origins:
        links = [{"url": f"http://{origin}/page{i}.html", "url_key": str(i)} for i in range(pages)]
        count(pool.submit(origin, links))
    count(pool.drain())
    seconds = time.perf_counter() - started
    pool.close()
    fetcher.close()
    writer.close()
    return seconds, ok, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--pages", type=int, default=5, help="links per host")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds each response takes")
    parser.add_argument("--host-delay", type=float, default=1.0, help="the stage's default")
    parser.add_argument("--one-server", action="store_true",
                        help="one server on 0.0.0.0, a loopback address per host, instead of a port per host")
    parser.add_argument("--hosts-in-flight", type=int, nargs="+", default=[256, 64],
                        help="threads per worker to try (256 is the stage's default)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")

    ports_queue, stop = multiprocessing.Queue(), multiprocessing.Event()
    if args.one_server:
        from webtext.pipeline.demo_web import loopback_address

        server = multiprocessing.Process(target=serve_one, args=(args.latency, ports_queue, stop), daemon=True)
        server.start()
        port = ports_queue.get(timeout=60)
        origins = [f"{loopback_address(i)}:{port}" for i in range(args.hosts)]
    else:
        server = multiprocessing.Process(target=serve, args=(args.hosts, args.latency, ports_queue, stop), daemon=True)
        server.start()
        origins = [f"127.0.0.1:{port}" for port in ports_queue.get(timeout=60)]
    bound = args.hosts / (args.latency + args.host_delay)
    print(f"{args.hosts} hosts x {args.pages} pages, {args.latency * 1000:.0f} ms per response, host delay "
          f"{args.host_delay:g}s: polite bound {bound:.1f} pages/s (hosts / (latency + delay))")
    try:
        for in_flight in args.hosts_in_flight:
            with tempfile.TemporaryDirectory(prefix="bench-fetch-") as workdir:
                cpu = resource.getrusage(resource.RUSAGE_SELF)
                seconds, ok, failed = crawl(origins, args.pages, in_flight, args.host_delay, workdir)
                after = resource.getrusage(resource.RUSAGE_SELF)
                warc_mb = sum(e.stat().st_size for e in os.scandir(workdir)) / 1e6
            cpu_seconds = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
            # the ideal time for this workload: robots.txt, then each page after the delay
            ideal = args.latency + args.pages * (args.host_delay + args.latency)
            waves = -(-args.hosts // in_flight)
            print(f"hosts in flight {in_flight:4d}: {ok:5d} pages ({failed} failed) in {seconds:6.2f}s = "
                  f"{ok / seconds:6.1f} pages/s; ideal {ideal * waves:.2f}s ({ok / (ideal * waves):.1f} pages/s); "
                  f"{ok / seconds / bound:.0%} of the polite bound; crawler CPU {cpu_seconds:.1f}s; WARC {warc_mb:.1f} MB")
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()


if __name__ == "__main__":
    main()
