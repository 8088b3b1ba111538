"""FusionFrames: text-to-video with the Kandinsky Video architecture."""

__version__ = "0.1.0"
