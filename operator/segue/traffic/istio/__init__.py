"""Istio router: the weights of two destinations in one HTTP route of a VirtualService, and
an HTTP route of its own with header matches, placed before it, for a segment."""
