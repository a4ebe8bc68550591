"""Synthetic RGB-D data engine: poses, sensor models and Azure Kinect recordings of rendered sequences."""
