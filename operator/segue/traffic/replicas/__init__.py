"""Replicas router: the share of ready pods of two Deployments behind one Service."""
