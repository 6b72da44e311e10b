"""Kubernetes test doubles: the API emulator, its thread runner, and a kubelet stand-in."""
