"""Reading and writing files: checkpoints and model folders, videos."""
