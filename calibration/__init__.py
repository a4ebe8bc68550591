"""FuseMesh calibration: Azure Kinect / RGB-D camera geometry in numpy and OpenCV (no people)."""
