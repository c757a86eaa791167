"""Secrets in text and configs: what counts as one, masking it, and taking credentials out of URLs
and putting them back. Pure; shared by the services and the CLI."""
