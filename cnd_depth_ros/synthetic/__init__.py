"""Procedural stereo world with exact depth, normals and disparity: the embedded default data."""
