"""What every Inferno process needs to start: settings from the environment, logging, and the one
bootstrap that connects to NATS and opens the log."""
