"""Chat channels: thin adapters between platforms and the ChatService."""
