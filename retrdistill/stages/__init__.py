"""One module per stage. Each reads an artefact, writes the next, and writes its manifest last."""
