"""Inferno client side: HTTP SDK, the `inferno` CLI and the local nats-server launcher."""
