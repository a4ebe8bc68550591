"""FuseMesh model: pure torch (body model, camera, encoders, fusion, regressor, USCG, losses)."""
