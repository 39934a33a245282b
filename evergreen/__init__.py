"""The ``evergreen`` command line (``evergreen.cli``): the top layer; nothing in pipeline, flows or serving imports it."""
