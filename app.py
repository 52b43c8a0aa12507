"""Web demo: ``python app.py [--host 127.0.0.1] [--port 7860] [--share] [--max-pixels N]``.

A thin launcher; the app itself is :func:`restorer.webapp.build_app`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Gradio web demo of restorer: upload an image, pick a task and model, compare, download."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,  # restorer.webapp.DEFAULT_MAX_PIXELS; not imported here so --help stays fast
        help="largest input image, width x height in pixels (default 2097152, about 2 megapixels)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_pixels is not None and args.max_pixels <= 0:
        parser.error("--max-pixels must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `kill` and service managers send SIGTERM: handle it like Ctrl-C, which Gradio answers by closing
    # its server, so the process ends normally and its result folder is removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from restorer._compat import require_extra
    from restorer.errors import MissingExtraError

    try:
        require_extra("gradio", "web", "The web demo")
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    from restorer import webapp

    app = webapp.build_app(max_pixels=args.max_pixels or webapp.DEFAULT_MAX_PIXELS)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, **webapp.launch_options())
    return 0


if __name__ == "__main__":
    sys.exit(main())
