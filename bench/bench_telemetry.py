"""What OpenTelemetry costs: publish and delivery with the API absent, the API alone (no SDK
configured), and the SDK recording into an in-memory reader and span exporter. "delivery" is
the time to drain the queued messages and then publish-and-receive as many, one by one.

Each mode runs in its own process (the API's absence is simulated by blocking its import), the
modes alternate round by round, and each figure is the median. Prints numbers; asserts nothing.

    uv run python bench/bench_telemetry.py [--rounds 7] [--messages 20000] [--url memory://bench-otel]

Target (issue 16): the API alone within 2% of the API absent, for publish and for delivery.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MODES = ("absent", "api", "sdk")


def child(mode: str, url: str, messages: int) -> None:
    """Measure one mode in this process; print seconds per publish and per delivered message."""
    if mode == "absent":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # ImportError from here on
    if mode == "api":  # the application imports the API (no SDK configured): the check runs
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    if mode == "sdk":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from opal_broadcast import telemetry

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        telemetry.instrument(
            meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
            tracer_provider=tracer_provider,
        )
    import anyio

    from opal_broadcast import Broadcast

    async def run() -> tuple[float, float]:
        async with Broadcast(url, max_queue=messages + 1) as broadcast:
            async with broadcast.subscribe("bench") as subscriber:
                for _ in range(1000):  # warm up
                    await broadcast.publish("bench", "x" * 100)
                for _ in range(1000):
                    await subscriber.get()
                started = time.perf_counter()
                for _ in range(messages):
                    await broadcast.publish("bench", "x" * 100)
                published = time.perf_counter()
                for _ in range(messages):
                    await subscriber.get()
                for _ in range(messages):  # the round trip: publish, then receive it
                    await broadcast.publish("bench", "x" * 100)
                    await subscriber.get()
                received = time.perf_counter()
                round_trip = received - published
        return (published - started) / messages, round_trip / messages

    # The best of 5 in one process: the per-message figures are small enough (2 us) for a
    # process's own noise to show; each mode gets the same treatment.
    runs = [anyio.run(run) for _ in range(5)]
    publish = min(run[0] for run in runs)
    delivery = min(run[1] for run in runs)
    print(json.dumps({"publish": publish, "delivery": delivery}))


def measure(mode: str, url: str, messages: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--messages", str(messages)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--url", default="memory://bench-otel")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.messages)
        return
    samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        order = MODES if round_ % 2 == 0 else MODES[::-1]
        for mode in order:
            samples[mode].append(measure(mode, args.url, args.messages))
    print(
        f"OpenTelemetry overhead on {args.url}, median of {args.rounds} rounds, {args.messages} messages"
    )
    absent = {
        k: statistics.median(s[k] for s in samples["absent"]) for k in ("publish", "delivery")
    }
    for mode in MODES:
        figures = {
            k: statistics.median(s[k] for s in samples[mode]) for k in ("publish", "delivery")
        }
        ratios = {k: figures[k] / absent[k] for k in figures}
        verdict = ""
        if mode == "api":
            ok = all(ratio <= 1.02 for ratio in ratios.values())
            verdict = f"  (target <= 1.02x) {'ok' if ok else 'MISSED'}"
        print(
            f"  {mode:7s} publish {figures['publish'] * 1e6:6.2f} us ({ratios['publish']:.3f}x)  "
            f"delivery {figures['delivery'] * 1e6:6.2f} us ({ratios['delivery']:.3f}x){verdict}"
        )


if __name__ == "__main__":
    main()
