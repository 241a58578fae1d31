"""fastrcnn: Fast R-CNN (Girshick, ICCV 2015) as a command-line toolkit and an importable package."""

__version__ = "0.1.0"
