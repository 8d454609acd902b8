"""What a report is made of, from a results table: the numbers (analyze), the plots, the report folder
(build) and example pictures (also drawn during training). Nothing here reads the store; for one spec's
results from the store, see `mixsweep.sweep.results`."""
