"""Pure SimPy process models of an event day; they emit events into a sink."""
