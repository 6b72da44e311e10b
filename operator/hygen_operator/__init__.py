"""HyGen Kubernetes operator (control plane). Imports only hygen_pod's API models."""
