"""One module per seed format: read, write, and build from our interactions (``pinrec``)."""
