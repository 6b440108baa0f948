"""Pure core, table-driven: no server, no client, no I/O."""
