"""campaign: send one open letter, personalised, to a list of officials."""

__version__ = "0.1.0"
