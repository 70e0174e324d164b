"""SST Desktop: consistent segmentation across groups of images with SAM2 (Static Segmentation by Tracking)."""

__version__ = "0.1.0"
