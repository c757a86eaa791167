"""The HTTP gateway: validates requests, appends commands, serves reads from the log."""
