"""The running service: configuration, wiring, transports, the embedded broker and the CLI."""
