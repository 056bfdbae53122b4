"""Throughput of the LLM captioner against a local stand-in endpoint with a fixed latency.

A real endpoint's latency (seconds per reply) dominates captioning time, so the captioner's job is
to keep ``concurrency`` requests in flight. The ideal, latency-bound rate is
``concurrency / latency`` items per second; this script measures items per second at several
concurrencies and prints the ratio to that ideal, measured in the same run (target: >= 0.8 at 32).

The stand-in runs in its own process (like a real server, it does not share our interpreter) and
answers every chat request with a valid five-caption reply after ``--latency`` seconds. Items have
short text (no summary step) so each costs exactly one request; the result cache is off.

    python benchmarks/llm_captioning.py --latency 0.25 --concurrency 1 8 32

``--serve PORT`` only runs the stand-in on 127.0.0.1:PORT (until Ctrl-C), to try
``terrascribe build llm --endpoint http://127.0.0.1:PORT/v1`` without a model.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

REPLY = {
    "captions": [
        "Aerial view of flooded fields south of a city.",
        "Brown water covers farmland in the centre of the scene.",
        "Three roads cross the inundated plain from left to right.",
        "A river runs along the top edge, bordered by vegetation.",
        "Scattered buildings stand out in the lower left corner.",
    ],
    "tags": ["flood", "farmland"],
    "location": None,
    "modality": "optical",
    "satellite": None,
    "sensor": None,
    "resolution_class": "high",
}


def _serve(port_queue: multiprocessing.Queue | None, latency: float, port: int = 0) -> None:
    body = json.dumps(
        {
            "id": "bench",
            "object": "chat.completion",
            "created": 0,
            "model": "stand-in",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": json.dumps(REPLY)},
                }
            ],
            "usage": {"prompt_tokens": 800, "completion_tokens": 150, "total_tokens": 950},
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        # Headers and body go out in two writes; with Nagle on, the second waits for a delayed
        # ACK (~40 ms on Linux), which would add to the artificial latency.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            time.sleep(latency)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if port_queue is not None:
        port_queue.put(server.server_port)
    else:
        print(f"stand-in chat endpoint at http://127.0.0.1:{server.server_port}/v1", flush=True)
    server.serve_forever()


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.25, help="stand-in reply latency (s)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="ideal duration of each measurement"
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help="only run the stand-in")
    args = parser.parse_args()
    if args.serve is not None:
        _serve(None, args.latency, args.serve)
        return

    from terrascribe.text.llm import CaptionInput, LLMCaptioner

    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports, args.latency), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
    images = [_png(i) for i in range(16)]
    try:
        rows = []
        for concurrency in args.concurrency:
            ideal = concurrency / args.latency
            n = max(concurrency, round(ideal * args.seconds))
            items = [
                CaptionInput(key=f"i{i}", image=images[i % 16], title="Floods", text="Short.")
                for i in range(n)
            ]
            captioner = LLMCaptioner(url, "stand-in", concurrency=concurrency, cache_dir=None)
            captioner.caption(items[: min(n, concurrency)], progress=False)  # warm-up
            start = time.perf_counter()
            outcomes = captioner.caption(items, progress=False)
            elapsed = time.perf_counter() - start
            assert all(o.status == "ok" for o in outcomes), {o.status for o in outcomes}
            rate = n / elapsed
            rows.append((concurrency, n, elapsed, rate, ideal, rate / ideal))
    finally:
        server.terminate()
    print(f"stand-in latency {args.latency:.3f} s per reply; ideal rate = concurrency / latency")
    print(
        f"{'concurrency':>11} {'items':>6} {'seconds':>8} {'items/s':>8} {'ideal':>8} {'ratio':>6}"
    )
    for c, n, s, rate, ideal, ratio in rows:
        print(f"{c:>11} {n:>6} {s:>8.2f} {rate:>8.1f} {ideal:>8.1f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
