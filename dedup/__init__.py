"""Plain-Python de-duplication library: exact hashes, MinHash/LSH, connected components, decontamination."""
