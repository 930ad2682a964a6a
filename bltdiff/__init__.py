"""bltdiff: fast sampling of byte-level masked diffusion LMs over BLT patches."""
