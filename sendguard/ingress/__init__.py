"""Ingresses turn a protocol's request into a call to Intake, and every failure into a reply."""
