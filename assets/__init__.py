"""FuseMesh assets: shipped data files and the dev tools that build them."""
