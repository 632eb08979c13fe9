"""The refined 36-label WM atlas and its transfer into subject space."""
