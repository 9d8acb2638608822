"""The Telegram channel (issue #10): ``channel`` (the bot's lifecycle, webhook and polling, the
outbox's ``deliver``), ``updates`` (an update read, pure), ``send`` (an outgoing event as
Telegram messages, pure) and ``flood`` (flood limits and wait news, pure, injected clock)."""
