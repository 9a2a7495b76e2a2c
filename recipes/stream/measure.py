"""Measure `wavegen serve` under load: gaps in every listener's audio, and the server's CPU with
many listeners against one.

    python3 recipes/stream/measure.py MODEL [--listeners 100] [--seconds 60] [--server-core 0]
        [--json [FILE]] [-- any other `wavegen serve` option]

The server runs pinned to one core (taskset); the listeners run here, in one process on the
other cores, each a real HTTP client reading /stream and splitting it into Ogg pages as they
arrive. Two phases on the same server: one listener for SECONDS, then LISTENERS at once for
SECONDS (``--rounds N`` repeats the pair, alternating). For each listener:

- continuity: every page after the header follows the one before (Ogg page numbers), so no
  page was skipped or repeated;
- gaps: a player that starts with the first page it gets and plays at real time; a gap is a
  stretch when it has nothing left to play (the listener's burst is its buffer);
- lateness: the spread of (arrival time - broadcast time) over the pages that came after the
  burst: how far any page was behind the real-time schedule. Below 100 ms, even a player that
  kept no buffer at all would never wait more than 100 ms.

The server's CPU is its process's user + system time (all threads, from /proc) over each
phase, from 3 s after the listeners connected to the end (so --seconds takes 4 or more), split
into the station thread (the busiest: engine, guard, archive, encoder; its work does not depend
on the listeners) and the rest (the event loop serving the listeners).

The figures print a line per phase; ``--json FILE`` also writes the whole report there (checked
before the server starts), ``--json`` alone prints the report as JSON on stdout and the lines on
stderr (``--json`` as wavegen's commands take it: wavegen.cli.options).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time

GRANULE_RATE = 48000  # Opus granule positions count 48 kHz samples
SETTLE_SECONDS = 3.0  # each phase measures from this long after its listeners connect (all past the burst)
MIN_SECONDS = SETTLE_SECONDS + 1  # and for a second at least: a shorter one measured nothing, then divided by it


def split_pages(buffer: bytearray) -> list[tuple[int, int, bytes]]:
    """Complete Ogg pages off the front of ``buffer`` → [(granule, page number, bytes)]."""
    pages, offset = [], 0
    while len(buffer) - offset >= 27:
        n = buffer[offset + 26]
        if len(buffer) - offset < 27 + n:
            break
        size = 27 + n + sum(buffer[offset + 27:offset + 27 + n])
        if len(buffer) - offset < size:
            break
        page = bytes(buffer[offset:offset + size])
        pages.append((int.from_bytes(page[6:14], "little", signed=True), int.from_bytes(page[18:22], "little"), page))
        offset += size
    del buffer[:offset]
    return pages


async def listener(session, url: str, stop_at: float, keep_bytes: bool) -> dict:
    arrivals, buffer, data = [], bytearray(), []
    async with session.get(url) as response:
        if response.status != 200:
            return {"status": response.status}
        async for chunk in response.content.iter_any():
            now = time.monotonic()
            buffer += chunk
            for granule, number, page in split_pages(buffer):
                arrivals.append((now, granule, number))
                if keep_bytes:
                    data.append(page)
            if now >= stop_at:
                break
    return {"status": 200, "pages": arrivals, "bytes": b"".join(data) if keep_bytes else None}


def analyse(result: dict) -> dict:
    """Continuity, gaps and lateness of one listener's pages (see the module docstring)."""
    audio = [(t, g, n) for t, g, n in result["pages"] if g > 0]
    numbers = [n for _, _, n in audio]
    continuous = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    # the player: starts at the second audio page (the first one's length is not known), plays on
    clock, played, received, gaps = audio[1][0], 0.0, (audio[1][1] - audio[0][1]) / GRANULE_RATE, []
    for (t, g, _), (_, g_before, _) in zip(audio[2:], audio[1:]):
        can_play = received - played
        if t - clock > can_play:
            gaps.append(t - clock - can_play)
            played = received
        else:
            played += t - clock
        clock, received = t, received + (g - g_before) / GRANULE_RATE
    late = [t - g / GRANULE_RATE for t, g, _ in audio if t > audio[0][0] + 0.1]
    return {"pages": len(audio), "audio_seconds": (audio[-1][1] - audio[0][1]) / GRANULE_RATE,
            "continuous": continuous, "gaps": len([g for g in gaps if g > 0.001]),
            "longest_gap_seconds": max(gaps, default=0.0),
            "lateness_seconds": max(late) - min(late) if len(late) > 1 else 0.0}


def _stat_cpu(path: str) -> float:
    fields = open(path).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    return _stat_cpu(f"/proc/{pid}/stat")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each of the server's threads, by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = _stat_cpu(f"/proc/{pid}/task/{tid}/stat")
        except OSError:  # the thread ended
            pass
    return out


def get_json(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


async def phase(base: str, pid: int, listeners: int, seconds: float) -> dict:
    import aiohttp

    start = time.monotonic()
    stop_at = start + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(listener(session, base + "stream", stop_at, keep_bytes=i < 2))
                 for i in range(listeners)]
        await asyncio.sleep(SETTLE_SECONDS)  # everyone connected and past the burst
        status_before, cpu_before, wall_before = get_json(base + "status"), cpu_seconds(pid), time.monotonic()
        threads_before = thread_cpu(pid)
        results = await asyncio.gather(*tasks)
        cpu_after, wall_after, status_after = cpu_seconds(pid), time.monotonic(), get_json(base + "status")
        threads_after = thread_cpu(pid)
    refused = [r for r in results if r["status"] != 200]
    per = [analyse(r) for r in results if r["status"] == 200]
    decoded = []
    for r in results[:2]:  # two listeners' audio decoded in full
        if r.get("bytes"):
            import soundfile as sf

            audio, rate = sf.read(io.BytesIO(r["bytes"]), dtype="float32")
            decoded.append({"seconds": len(audio) / rate, "sample_rate": rate})
    wall = wall_after - wall_before
    return {
        "listeners": listeners, "seconds": seconds, "refused": len(refused),
        "all_continuous": all(p["continuous"] for p in per),
        "listeners_with_gaps": sum(1 for p in per if p["gaps"]),
        "longest_gap_seconds": max(p["longest_gap_seconds"] for p in per),
        "max_lateness_seconds": max(p["lateness_seconds"] for p in per),
        "min_audio_seconds": min(p["audio_seconds"] for p in per),
        "server_cpu_seconds": cpu_after - cpu_before, "wall_seconds": wall,
        # the station is the busiest thread; the rest (the event loop above all) serves the listeners
        "station_thread_cpu_seconds": max(threads_after[t] - threads_before.get(t, 0.0) for t in threads_after),
        "server_cpu_percent": 100 * (cpu_after - cpu_before) / wall,
        "station_cpu_seconds": status_after["generator_cpu_seconds"] - status_before["generator_cpu_seconds"],
        "realtime_factor": status_after["realtime_factor"], "skips": status_after["skips_total"],
        "dropped": status_after["dropped_total"], "decoded": decoded,
    }


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    """The options, and the `wavegen serve` options after them. ``--json [FILE]`` as wavegen's commands take it
    (wavegen.cli.options): ``--json MODEL`` with no model serves MODEL and prints the JSON; FILE checked here,
    before the server starts."""
    from wavegen.cli.options import add_json, check_json_file, json_file, settle_json_word
    from wavegen.errors import WavegenError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=None, help="what `wavegen serve` serves: a model or run folder")
    parser.add_argument("--listeners", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="one-then-many phases, repeated")
    add_json(parser, "the report")
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # after it: serve's (never the model argparse missed)
    args, extra = parser.parse_known_args(argv[:cut])
    settle_json_word(args)  # `measure.py --json RUN`: RUN is the model, not --json's file
    if args.model is None:
        took = json_file(args)
        parser.error("give the MODEL to serve" +
                     (f" (--json took {took} as the file to write: give the model before --json)" if took else ""))
    if args.listeners < 2:  # one against one: both phases alike, the ratio 1 whatever the server does
        parser.exit(2, f"{parser.prog}: error: --listeners {args.listeners}: the server's CPU with that many "
                       "listeners is measured against one listener's; give 2 or more\n")
    if not args.seconds >= MIN_SECONDS:  # (nan too)
        parser.exit(2, f"{parser.prog}: error: --seconds {args.seconds:g}: each phase measures from "
                       f"{SETTLE_SECONDS:g} s after its listeners connect; give {MIN_SECONDS:g} or more\n")
    try:
        check_json_file(args, "live.json", "measure.py report",
                        lambda v: isinstance(v, dict) and {"command", "server_core"} <= v.keys())
    except WavegenError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return args, extra + argv[cut + 1:]


def ratio_line(listeners: int, ratio: float, rest: list[float]) -> str:
    """The last line: the server's CPU with ``listeners`` against one (``ratio``), and outside the station thread
    (``rest``: fractions of a core, one then many), each count agreeing with its noun."""
    from wavegen.progress import counted

    return (f"server CPU, {counted(listeners, 'listener')} / 1 listener: {ratio:.3f} "
            f"(all rounds; outside the station thread: {100 * rest[0]:.2f}% -> {100 * rest[1]:.2f}% of a core)")


def main() -> int:
    from wavegen.cli.options import JSON_STDOUT, emit_json
    from wavegen.errors import WavegenError
    from wavegen.progress import counted

    args, extra = parse_args()
    text = sys.stderr if args.json == JSON_STDOUT else sys.stdout  # a bare --json: the JSON alone on stdout
    cores = sorted(os.sched_getaffinity(0) - {args.server_core}) or [args.server_core]
    cmd = ["taskset", "-c", str(args.server_core), sys.executable, "-m", "wavegen", "serve", args.model,
           "--port", "0", "--max-listeners", str(args.listeners + 10),
           "--max-listeners-per-client", "0", *extra]  # every listener here has the same address
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        if not line.startswith("listening: "):
            raise SystemExit(f"the server did not start: {line!r}")
        base = line.split(" ", 1)[1].strip()
        os.sched_setaffinity(0, cores)  # the listeners stay off the server's core
        time.sleep(8.0)  # a few seconds on air: a full burst for every listener
        load_before = os.getloadavg()
        phases = []
        for _ in range(args.rounds):  # alternated, so a drift in the machine's load hits both alike
            phases.append(asyncio.run(phase(base, server.pid, 1, args.seconds)))
            phases.append(asyncio.run(phase(base, server.pid, args.listeners, args.seconds)))
        report = {"command": " ".join(cmd), "model": args.model, "server_core": args.server_core,
                  "client_cores": cores, "load_before": load_before, "load_after": os.getloadavg(),
                  "phases": phases, "status": get_json(base + "status")}
    finally:
        server.terminate()
        server.wait(30)
    total = {1: {}, args.listeners: {}}
    for r in phases:
        station, wall = r["station_thread_cpu_seconds"], r["wall_seconds"]
        # right-aligned ("    1 listener", "  10 listeners"), so the lines' " x" line up as they did
        print(f"{counted(r['listeners'], 'listener'):>14} x {r['seconds']:.0f} s: server CPU "
              f"{r['server_cpu_percent']:.1f}% of a core = station thread {100 * station / wall:.1f}% + the rest "
              f"{100 * (r['server_cpu_seconds'] - station) / wall:.1f}%; "
              f"continuous: {r['all_continuous']}; listeners with gaps: {r['listeners_with_gaps']} "
              f"(longest {1000 * r['longest_gap_seconds']:.0f} ms); "
              f"max lateness {1000 * r['max_lateness_seconds']:.0f} ms; "
              f"refused {r['refused']}, skips {r['skips']}, dropped {r['dropped']}; decoded {r['decoded']}", file=text)
        for key in ("server_cpu_seconds", "station_thread_cpu_seconds", "wall_seconds"):
            total[r["listeners"]][key] = total[r["listeners"]].get(key, 0.0) + r[key]
    one, many = total[1], total[args.listeners]
    report["cpu_ratio"] = (many["server_cpu_seconds"] / many["wall_seconds"]) / \
        (one["server_cpu_seconds"] / one["wall_seconds"])
    rest = [(t["server_cpu_seconds"] - t["station_thread_cpu_seconds"]) / t["wall_seconds"] for t in (one, many)]
    report["rest_cpu_percent"] = [100 * r for r in rest]
    print(ratio_line(args.listeners, report["cpu_ratio"], rest), file=text)
    if args.json is not None:
        try:
            emit_json(args, report, indent=1, kept="the lines above have the figures")
        except WavegenError as err:
            print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
