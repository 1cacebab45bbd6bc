"""Use cases: what each API action does, between the web layer and the store/engine."""
