"""The control plane: an HTTP API on a Unix socket, Firecracker's, and its client."""
