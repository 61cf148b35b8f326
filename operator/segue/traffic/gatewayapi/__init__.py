"""Gateway API router: the weights of two backendRefs in one HTTPRoute rule, and a rule of
its own with header matches for a segment."""
