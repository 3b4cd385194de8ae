"""Delivery: the dispatcher and the upstreams it sends through."""
