"""Built-in dataset specs. `FLIGHTLINE_DATASET=flights` picks `ml.datasets.flights:SPEC`."""
