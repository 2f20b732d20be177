"""Stage 1, the data: column maps, readers and checks, the index, the streamed pass over parts."""
