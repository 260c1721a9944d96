"""Built-in dataset specs. `FLIGHTLINE_DATASET=flights` picks `ml.datasets.flights:SPEC`."""

DEFAULT_DATASET = "flights"  # the dataset `make run` and `make test` use when FLIGHTLINE_DATASET is not set
