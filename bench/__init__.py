"""contactgate benchmarks: the gateway against a bare websocket relay, and its SMTP listener against a
bare aiosmtpd server, each measured in the same run.

``python -m bench`` (``make bench``) runs everything; ``bench.run.run_bench(bench.run.Options())``
is the same from Python. See docs/performance.md.
"""
