"""Segue: progressive delivery for Kubernetes."""

GROUP = "segue.dev"
VERSION = "v1alpha1"
PLURAL = "rollouts"
KIND = "Rollout"

__version__ = "0.1.0"
FIELD_MANAGER = "segue"  # the name on every field Segue writes (managedFields)
