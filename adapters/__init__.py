"""Channel adapters: one module per channel, each turning its channel's payloads into the one
``Inbound`` shape and sending conversation events back out. ``registry`` builds them by the
config's channel ``type``; the gateway core never imports a concrete adapter."""
