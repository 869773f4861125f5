"""The model of a request, with no I/O: sizes, the request and its validation, the price table, images."""
