"""Segue: progressive delivery for Kubernetes."""

GROUP = "segue.dev"
VERSION = "v1alpha1"
PLURAL = "rollouts"
KIND = "Rollout"

__version__ = "0.1.0"
FIELD_MANAGER = "segue"  # the name on every field Segue writes (managedFields)

# With --require-managed-label, Segue writes only to Deployments and routing objects that
# carry this label with this value: the owner of an object opts it in, not the author of a
# Rollout.
MANAGED_LABEL = "segue.dev/managed"
MANAGED_VALUE = "true"


def is_managed(labels: object) -> bool:
    """Whether an object's ``metadata.labels`` opt it in to Segue's writes."""
    return isinstance(labels, dict) and labels.get(MANAGED_LABEL) == MANAGED_VALUE
