"""Thin Quart adapters: parse, authenticate, call a service, write the answer."""
