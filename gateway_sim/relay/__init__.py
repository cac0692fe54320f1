"""The network-service provider's relay: store, forward with retries, dedupe, return receipts."""
