"""metarl plugin: Meta-World's ML1, ML10 and ML45 benchmarks as task families (see `families`)."""
