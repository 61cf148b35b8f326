"""NGINX Ingress router: the canary annotations of a canary Ingress that ingress-nginx pairs
with a primary Ingress, and a by-header rule for a segment."""
